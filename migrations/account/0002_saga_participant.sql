-- The account service as a saga participant: the outbox and inbox
-- (corebank_platform::messaging::OUTBOX_INBOX_DDL), the command log that makes
-- every command apply at most once and answer a duplicate with its first
-- reply, tombstones for compensations that overtook their forward command,
-- and the mirror of customers' KYC status learnt from customer events.
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

create table command_log (
    command_id text primary key,
    -- The encoded CommandReply sent the first time.
    reply bytea not null,
    -- Set by a successful reserve: the hold later released or captured.
    hold_id uuid,
    created_at timestamptz not null
);

create table command_tombstone (
    -- The forward command (a reserve) that must be refused if it arrives now.
    command_id text primary key,
    -- The compensation that got here first.
    compensated_by text not null,
    created_at timestamptz not null
);

create table customer_kyc (
    customer_id uuid primary key,
    kyc_status text not null,
    kyc_version bigint not null,
    updated_at timestamptz not null,
    constraint customer_kyc_status_known check (kyc_status in ('pending', 'verified', 'rejected', 'suspended'))
);
