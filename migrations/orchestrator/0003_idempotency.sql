-- Idempotency keys of the operator actions RetrySaga and AbortSaga
-- (corebank_platform::idempotency): the same key with the same request
-- replays the first response instead of logging a second admin transition.

create table idempotency_key (
    idempotency_key text constraint idempotency_key_pkey primary key,
    fingerprint bytea not null,
    response bytea,
    created_at timestamptz not null,
    expires_at timestamptz not null
);

create index idempotency_key_expires_idx on idempotency_key (expires_at);
