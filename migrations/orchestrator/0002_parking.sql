-- Parking: a saga whose current step answered WAITING waits for that step's
-- final reply until a deadline. Its timer (next_attempt_at) stays the guard
-- the timer loop claims, at deadline plus the engine's grace, so the due scan
-- and its index are unchanged.

alter table saga add column parked_until timestamptz;

-- Only a running saga parks (waiting steps come before the pivot, never in
-- compensation); a terminal or compensating saga has nothing to wait for.
alter table saga add constraint saga_parked_while_running
    check (parked_until is null or state = 'running');

-- Operators list parked sagas.
create index saga_parked_idx on saga (saga_id) where parked_until is not null;
