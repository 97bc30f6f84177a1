-- The public record of every money movement, its append-only status history,
-- the saga commands already applied, idempotency keys, and the outbox / inbox.
-- Runs with search_path = transaction.

create table transaction (
    transaction_id uuid constraint transaction_pkey primary key,
    kind text not null,
    status text not null,
    source_account_id uuid,
    destination_account_id uuid,
    currency text not null,
    amount numeric not null,
    description text not null default '',
    failure_reason text not null default '',
    failure_detail text not null default '',
    journal_id text not null default '',
    created_at timestamptz not null,
    updated_at timestamptz not null,
    constraint transaction_kind_known check (kind in ('transfer', 'deposit', 'withdrawal')),
    constraint transaction_status_known
        check (status in ('pending', 'processing', 'review', 'completed', 'failed')),
    constraint transaction_amount_positive check (amount > 0),
    constraint transaction_accounts_match_kind check (
        (kind = 'transfer' and source_account_id is not null and destination_account_id is not null
            and source_account_id <> destination_account_id)
        or (kind = 'deposit' and source_account_id is null and destination_account_id is not null)
        or (kind = 'withdrawal' and source_account_id is not null and destination_account_id is null)
    ),
    constraint transaction_failure_only_when_failed check (status = 'failed' or failure_reason = '')
);

-- ListTransactions reads both sides of an account newest first, keyset-paginated.
create index transaction_source_idx
    on transaction (source_account_id, created_at desc, transaction_id desc)
    where source_account_id is not null;
create index transaction_destination_idx
    on transaction (destination_account_id, created_at desc, transaction_id desc)
    where destination_account_id is not null;

create table transaction_status_change (
    transaction_status_change_id bigint generated always as identity
        constraint transaction_status_change_pkey primary key,
    transaction_id uuid not null,
    -- Null for the creation of the transaction.
    from_status text,
    to_status text not null,
    reason_code text not null default '',
    detail text not null default '',
    -- The saga command that caused the change; null for the creation.
    command_id text,
    created_at timestamptz not null,
    constraint transaction_status_change_transaction_fk
        foreign key (transaction_id) references transaction (transaction_id)
);

create index transaction_status_change_transaction_idx
    on transaction_status_change (transaction_id, transaction_status_change_id);

-- The history is the audit trail: nobody edits it, not even the owner.
create function forbid_history_change() returns trigger language plpgsql as $$
begin
    raise exception '% on % is not allowed: the table is append-only', tg_op, tg_table_name
        using errcode = 'insufficient_privilege';
end
$$;

create trigger transaction_status_change_append_only
    before update or delete on transaction_status_change
    for each row execute function forbid_history_change();

-- Saga commands applied, by their deterministic id: a re-sent command has no
-- second effect and gets the stored reply again.
create table command_log (
    command_id text constraint command_log_pkey primary key,
    message_type text not null,
    transaction_id uuid,
    -- The encoded CommandReply; null for commands that expect no reply.
    reply bytea,
    created_at timestamptz not null
);

create table idempotency_key (
    idempotency_key text primary key,
    fingerprint bytea not null,
    response bytea,
    created_at timestamptz not null,
    expires_at timestamptz not null
);

create index idempotency_key_expires_idx on idempotency_key (expires_at);

-- Outbox and inbox: corebank_platform::messaging::OUTBOX_INBOX_DDL.
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
