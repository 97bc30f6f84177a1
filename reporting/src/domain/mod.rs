//! Pure reporting logic: no tonic, sqlx or lapin.

pub mod export;
