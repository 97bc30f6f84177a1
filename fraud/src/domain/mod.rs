//! Pure fraud logic: features, rules and their evaluation. No I/O.
