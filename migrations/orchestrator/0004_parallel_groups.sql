-- Parallel groups: steps declared to run alongside the step before them send
-- their commands together. While the saga stands at such a group
-- (current_step names its first step), answered_steps names those of its
-- steps that have succeeded; the saga moves on when all have. Empty anywhere
-- else.

alter table saga add column answered_steps text[] not null default '{}';
