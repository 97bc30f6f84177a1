-- The ledger as a feed: a global sequence on journals, so reporting can page
-- through every entry in ledger order, resume after the last journal it saw,
-- and reconcile as of one point of the ledger.
--
-- `ledger_seq` is an identity column: a posting takes the next value in its
-- insert (`returning ledger_seq`); the service role may use the sequence
-- because provisioning grants usage on every sequence of the schema, as for
-- the outbox. Values are unique and increase with each posting, but a rolled
-- back posting leaves a gap, and a posting may commit after one with a higher
-- value: readers must not assume that no lower value can still appear.
--
-- Existing journals are numbered by the column's own fill, without an UPDATE
-- (the append-only trigger refuses one even to the owner). That fill assigns
-- values in the physical order of the table's rewrite, so the table is first
-- clustered in (created_at, journal_id) order and the scan kept from starting
-- mid-table: the oldest journal gets 1.

create index journal_created_idx on journal (created_at, journal_id);
cluster journal using journal_created_idx;
set local synchronize_seqscans = off;

alter table journal
    add column ledger_seq bigint generated always as identity,
    add constraint journal_ledger_seq_unique unique (ledger_seq);

-- Only the backfill needed it; the feed reads journals by ledger_seq.
drop index journal_created_idx;
