-- The transactional outbox (KYC events) and the inbox. Same DDL as
-- corebank_platform::messaging::OUTBOX_INBOX_DDL.
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

-- Orders KYC changes per customer for consumers that mirror them.
alter table customer add column kyc_version bigint not null default 0;
