-- The fraud service: screening decisions, the review queue, alerts, the
-- versioned rule set, the watchlist, the analysts' action log, and the local
-- state features are computed from (account and customer profiles from
-- events, and every screened movement). Runs with search_path = fraud.
-- Amounts are numeric(28, 8), as in the ledger.

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

-- Every version of the rule set; the highest is active. Never edited.
create table rule_set (
    version bigint constraint rule_set_pkey primary key,
    -- The domain RuleSet (decimals as strings).
    body jsonb not null,
    created_by text not null,
    reason text not null,
    created_at timestamptz not null,
    constraint rule_set_version_positive check (version >= 1)
);

-- Who owns each account and since when (account.account.opened).
create table account_profile (
    account_id uuid constraint account_profile_pkey primary key,
    customer_id uuid not null,
    currency text not null,
    opened_at timestamptz not null
);

create index account_profile_customer_idx on account_profile (customer_id);

-- Each customer's KYC status and when it was last verified (customer.kyc.changed).
create table customer_profile (
    customer_id uuid constraint customer_profile_pkey primary key,
    kyc_status text not null,
    kyc_sequence bigint not null,
    verified_at timestamptz,
    updated_at timestamptz not null
);

-- Every screened movement, from the screen command itself, so movements
-- still in flight count toward velocity; settled by transaction events.
create table movement (
    transaction_id uuid constraint movement_pkey primary key,
    kind text not null,
    source_account_id uuid,
    destination_account_id uuid,
    amount numeric(28, 8) not null,
    currency text not null,
    -- in_flight | completed | failed
    status text not null default 'in_flight',
    requested_at timestamptz not null,
    updated_at timestamptz not null,
    constraint movement_kind_known check (kind in ('transfer', 'deposit', 'withdrawal')),
    constraint movement_status_known check (status in ('in_flight', 'completed', 'failed')),
    constraint movement_amount_positive check (amount > 0)
);

create index movement_source_idx on movement (source_account_id, requested_at) where source_account_id is not null;
create index movement_destination_idx on movement (destination_account_id, requested_at) where destination_account_id is not null;

-- One decision per screen command: the rule-set version and feature snapshot
-- it used, the rules that fired, and the reply sent (a duplicate command gets
-- it again). Never edited: a review's outcome lives in `review`.
create table decision (
    decision_id uuid constraint decision_pkey primary key,
    command_id text not null constraint decision_command_id_key unique,
    transaction_id uuid not null constraint decision_transaction_id_key unique,
    saga_id uuid not null,
    -- approve | review | decline
    outcome text not null,
    rule_set_version bigint not null constraint decision_rule_set_fk references rule_set (version),
    features jsonb not null,
    fired jsonb not null,
    -- The encoded CommandReply sent the first time.
    reply bytea not null,
    source_account_id uuid,
    destination_account_id uuid,
    created_at timestamptz not null,
    constraint decision_outcome_known check (outcome in ('approve', 'review', 'decline'))
);

-- The analyst queue: one review per REVIEW decision, decided exactly once.
create table review (
    review_id uuid constraint review_pkey primary key,
    decision_id uuid not null constraint review_decision_id_key unique
        constraint review_decision_fk references decision (decision_id),
    transaction_id uuid not null,
    saga_id uuid not null,
    command_id text not null,
    -- open | approved | declined | expired
    state text not null default 'open',
    deadline timestamptz not null,
    -- approve | decline: what the deadline decides
    timeout_action text not null,
    decided_by text,
    decision_reason text,
    automatic boolean not null default false,
    decided_at timestamptz,
    created_at timestamptz not null,
    constraint review_state_known check (state in ('open', 'approved', 'declined', 'expired')),
    constraint review_timeout_action_known check (timeout_action in ('approve', 'decline')),
    constraint review_decided_consistently check ((state = 'open') = (decided_at is null))
);

create index review_open_deadline_idx on review (deadline) where state = 'open';
create index review_state_idx on review (state, deadline, review_id);

-- Alert-only rules that fired (the movement went on).
create table alert (
    alert_id uuid constraint alert_pkey primary key,
    decision_id uuid not null constraint alert_decision_fk references decision (decision_id),
    transaction_id uuid not null,
    account_id uuid,
    rules jsonb not null,
    created_at timestamptz not null
);

create index alert_account_idx on alert (account_id, alert_id);

-- Accounts and customers to look at twice. Removal is a timestamp, not a delete.
create table watchlist_entry (
    entry_id uuid constraint watchlist_entry_pkey primary key,
    -- account | customer
    subject text not null,
    subject_id uuid not null,
    reason text not null,
    added_by text not null,
    created_at timestamptz not null,
    expires_at timestamptz,
    removed_at timestamptz,
    removed_by text,
    constraint watchlist_subject_known check (subject in ('account', 'customer'))
);

create index watchlist_active_idx on watchlist_entry (subject_id) where removed_at is null;

-- Every analyst action (decisions, rule changes, watchlist changes), with
-- actor, reason and time. Never edited.
create table analyst_action (
    analyst_action_id bigint generated always as identity constraint analyst_action_pkey primary key,
    actor text not null,
    -- decide_review | expire_review | update_rule_set | add_to_watchlist | remove_from_watchlist
    action text not null,
    subject_id text not null,
    reason text not null,
    detail jsonb not null default '{}',
    created_at timestamptz not null
);

-- Idempotency keys of the analyst API (corebank_platform::idempotency).
create table idempotency_key (
    idempotency_key text constraint idempotency_key_pkey primary key,
    fingerprint bytea not null,
    response bytea,
    created_at timestamptz not null,
    expires_at timestamptz not null
);

create index idempotency_key_expires_idx on idempotency_key (expires_at);
