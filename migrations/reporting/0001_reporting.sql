-- The reporting service: read models projected from the ledger's events
-- (entries, per-account cursors, entries waiting for their predecessor,
-- daily totals), the context they are described with (accounts, KYC,
-- transaction outcomes, fraud decisions), signed auditor exports and
-- reconciliation reports. Runs with search_path = reporting. Amounts are
-- numeric(28, 8), as in the ledger.

-- The outbox and inbox (corebank_platform::messaging::OUTBOX_INBOX_DDL).
create table if not exists outbox (
    outbox_id bigint generated always as identity constraint outbox_pkey primary key,
    message_id uuid not null constraint outbox_message_id_key unique,
    exchange text not null
        constraint outbox_exchange_check check (exchange in ('commands', 'replies', 'events')),
    routing_key text not null,
    message_type text not null,
    payload bytea not null,
    correlation_id uuid,
    causation_id uuid,
    traceparent text,
    schema_version integer not null default 1,
    occurred_at timestamptz not null,
    created_at timestamptz not null default now(),
    sent_at timestamptz
);

create index if not exists outbox_pending_idx on outbox (outbox_id) where sent_at is null;

create table if not exists inbox (
    consumer text not null,
    message_id uuid not null,
    message_type text not null,
    received_at timestamptz not null default now(),
    constraint inbox_pkey primary key (consumer, message_id)
);

-- Every ledger entry the projection has applied, in its account's order.
-- `running_balance` is computed here (previous running balance + this
-- entry); `ledger_balance_after` is what the ledger said, kept to compare.
create table entry (
    entry_id uuid constraint entry_pkey primary key,
    journal_id uuid not null,
    ledger_seq bigint not null,
    account_id uuid not null,
    account_seq bigint not null,
    counterparty_account_id uuid,
    currency text not null,
    direction text not null,
    amount numeric(28, 8) not null,
    running_balance numeric(28, 8) not null,
    ledger_balance_after numeric(28, 8) not null,
    kind text not null,
    transaction_id text not null,
    post_time timestamptz not null,
    applied_at timestamptz not null,
    constraint entry_direction_known check (direction in ('debit', 'credit')),
    constraint entry_amount_positive check (amount > 0),
    constraint entry_account_seq_unique unique (account_id, account_seq)
);

create index entry_ledger_order_idx on entry (ledger_seq, account_id);
create index entry_post_time_idx on entry (post_time);
create index entry_account_time_idx on entry (account_id, post_time);

-- Where the projection stands in each account: the last applied sequence
-- and the running balance after it.
create table account_cursor (
    account_id uuid constraint account_cursor_pkey primary key,
    currency text not null,
    last_account_seq bigint not null default 0,
    balance numeric(28, 8) not null default 0,
    updated_at timestamptz not null
);

-- Entries that arrived before their account's predecessor: applied as soon
-- as the gap closes.
create table pending_entry (
    account_id uuid not null,
    account_seq bigint not null,
    entry_id uuid not null,
    journal_id uuid not null,
    ledger_seq bigint not null,
    counterparty_account_id uuid,
    currency text not null,
    direction text not null,
    amount numeric(28, 8) not null,
    ledger_balance_after numeric(28, 8) not null,
    kind text not null,
    transaction_id text not null,
    post_time timestamptz not null,
    received_at timestamptz not null,
    constraint pending_entry_pkey primary key (account_id, account_seq)
);

-- Per account and UTC day. The closing balance is that of the day's entry
-- with the highest account sequence.
create table daily_total (
    account_id uuid not null,
    day date not null,
    currency text not null,
    debits numeric(28, 8) not null,
    credits numeric(28, 8) not null,
    entry_count bigint not null,
    closing_balance numeric(28, 8) not null,
    last_account_seq bigint not null,
    constraint daily_total_pkey primary key (account_id, day)
);

create index daily_total_day_idx on daily_total (day, account_id);

-- Accounts as their lifecycle events describe them.
create table account_profile (
    account_id uuid constraint account_profile_pkey primary key,
    customer_id uuid,
    currency text,
    status text not null,
    opened_at timestamptz,
    status_changed_at timestamptz not null
);

-- Customers' KYC status; a higher sequence wins, so order does not matter.
create table customer_kyc (
    customer_id uuid constraint customer_kyc_pkey primary key,
    kyc_status text not null,
    kyc_sequence bigint not null,
    changed_at timestamptz not null
);

-- How each money movement ended.
create table transaction_outcome (
    transaction_id uuid constraint transaction_outcome_pkey primary key,
    kind text not null,
    status text not null,
    reason_code text not null default '',
    detail text not null default '',
    journal_id uuid,
    source_account_id uuid,
    destination_account_id uuid,
    currency text,
    amount numeric(28, 8),
    ended_at timestamptz not null,
    constraint transaction_outcome_status_known check (status in ('completed', 'failed'))
);

-- Fraud screening decisions and the final word of their reviews.
create table fraud_decision (
    decision_id uuid constraint fraud_decision_pkey primary key,
    transaction_id uuid not null,
    outcome text not null,
    rule_set_version bigint not null,
    fired_rules text[] not null,
    review_outcome text,
    decided_at timestamptz not null
);

create index fraud_decision_transaction_idx on fraud_decision (transaction_id);

-- Every key exports were signed with; a rotated key stays listed.
create table signing_key (
    key_id text constraint signing_key_pkey primary key,
    algorithm text not null,
    public_key_pem text not null,
    first_used_at timestamptz not null
);

-- Exports: the signed files, kept byte for byte. Never edited.
create table export (
    export_id uuid constraint export_pkey primary key,
    period_start timestamptz not null,
    period_end timestamptz not null,
    -- Sorted account ids; empty means all accounts.
    scope_accounts uuid[] not null,
    row_count bigint not null,
    first_ledger_seq bigint not null,
    last_ledger_seq bigint not null,
    chain_head text not null,
    merkle_root text not null,
    previous_chain_head text not null,
    previous_export_id uuid,
    key_id text not null,
    manifest bytea not null,
    signature bytea not null,
    jsonl bytea not null,
    csv bytea not null,
    created_at timestamptz not null,
    constraint export_signing_key_fk foreign key (key_id) references signing_key (key_id),
    constraint export_period_ordered check (period_start < period_end)
);

create index export_scope_period_idx on export (scope_accounts, period_end);
create index export_created_idx on export (created_at desc, export_id desc);

-- Reconciliation runs and what each found. Never edited.
create table reconciliation (
    reconciliation_id uuid constraint reconciliation_pkey primary key,
    as_of_ledger_seq bigint not null,
    ledger_head_seq bigint not null,
    trigger text not null,
    clean boolean not null,
    accounts_checked bigint not null,
    entries_checked bigint not null,
    -- The encoded corebank.v1.ProjectionStatus at the time of the run.
    lag bytea not null,
    created_at timestamptz not null,
    constraint reconciliation_trigger_known check (trigger in ('manual', 'schedule'))
);

create index reconciliation_created_idx on reconciliation (created_at desc, reconciliation_id desc);

create table reconciliation_mismatch (
    reconciliation_id uuid not null,
    position integer not null,
    kind text not null,
    account_id uuid,
    currency text not null default '',
    entry_id uuid,
    ledger_value text not null default '',
    read_model_value text not null default '',
    detail text not null default '',
    constraint reconciliation_mismatch_pkey primary key (reconciliation_id, position),
    constraint reconciliation_mismatch_run_fk foreign key (reconciliation_id)
        references reconciliation (reconciliation_id)
);

-- Exports and reconciliation reports are the audit trail: nobody edits them.
create function forbid_history_change() returns trigger language plpgsql
set search_path from current as $$
begin
    raise exception '% on % is not allowed: the table is append-only', tg_op, tg_table_name
        using errcode = 'insufficient_privilege';
end
$$;

create trigger export_append_only
    before update or delete on export
    for each row execute function forbid_history_change();

create trigger reconciliation_append_only
    before update or delete on reconciliation
    for each row execute function forbid_history_change();

create trigger reconciliation_mismatch_append_only
    before update or delete on reconciliation_mismatch
    for each row execute function forbid_history_change();

-- Idempotency keys of CreateExport (corebank_platform::idempotency).
create table idempotency_key (
    idempotency_key text constraint idempotency_key_pkey primary key,
    fingerprint bytea not null,
    response bytea,
    created_at timestamptz not null,
    expires_at timestamptz not null
);

create index idempotency_key_expires_idx on idempotency_key (expires_at);
