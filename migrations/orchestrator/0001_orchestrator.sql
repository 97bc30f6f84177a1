-- Saga instances, their append-only step log, and the outbox / inbox.
-- Runs with search_path = orchestrator.

create table saga (
    saga_id uuid primary key,
    saga_type text not null,
    transaction_id uuid not null,
    state text not null,
    -- The step awaited (or, once terminal, the last one run) and its direction.
    current_step text not null,
    direction text not null,
    -- Whether the failure finish follows a compensation (COMPENSATED) or not (FAILED).
    compensated boolean not null default false,
    attempt integer not null,
    -- The timer: when the current step times out. Null once terminal.
    next_attempt_at timestamptz,
    step_started_at timestamptz not null,
    requires_attention boolean not null default false,
    -- Accounts, amount (a decimal string), currency, hold and journal ids.
    data jsonb not null,
    failure_reason text,
    failure_detail text,
    created_at timestamptz not null,
    updated_at timestamptz not null,
    constraint saga_transaction_id_key unique (transaction_id),
    constraint saga_type_known check (saga_type in ('transfer', 'deposit', 'withdrawal')),
    constraint saga_state_known check (state in ('running', 'compensating', 'completed', 'compensated', 'failed')),
    constraint saga_direction_known check (direction in ('forward', 'compensate')),
    constraint saga_attempt_positive check (attempt >= 1),
    constraint saga_timer_while_active check ((state in ('running', 'compensating')) = (next_attempt_at is not null))
);

-- The timer loop's scan: due active sagas, oldest deadline first.
create index saga_due_idx on saga (next_attempt_at) where state in ('running', 'compensating');
create index saga_state_idx on saga (state, saga_id);
create index saga_attention_idx on saga (saga_id) where requires_attention;

create table saga_log (
    saga_log_id bigint generated always as identity constraint saga_log_pkey primary key,
    saga_id uuid not null,
    step text not null,
    direction text not null,
    event text not null,
    state text not null,
    command_id text not null,
    attempt integer not null,
    detail text not null default '',
    actor text,
    created_at timestamptz not null,
    constraint saga_log_saga_fk foreign key (saga_id) references saga (saga_id)
);

create index saga_log_saga_idx on saga_log (saga_id, saga_log_id);

-- The log is the audit trail: nobody edits it, not even the owner.
create function forbid_saga_log_change() returns trigger language plpgsql as $$
begin
    raise exception '% on % is not allowed: the table is append-only', tg_op, tg_table_name
        using errcode = 'insufficient_privilege';
end
$$;

create trigger saga_log_append_only
    before update or delete on saga_log
    for each row execute function forbid_saga_log_change();

create trigger saga_log_no_truncate
    before truncate on saga_log
    for each statement execute function forbid_saga_log_change();

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
