-- Customers, their personal data, and the append-only KYC history.
-- Runs with search_path = customer.

create table customer (
    customer_id uuid primary key,
    legal_name text not null,
    email text not null,
    phone text not null default '',
    date_of_birth date not null,
    country char(2) not null,
    national_id text not null,
    kyc_status text not null default 'pending',
    created_at timestamptz not null,
    updated_at timestamptz not null,
    constraint customer_kyc_status_known check (kyc_status in ('pending', 'verified', 'rejected', 'suspended')),
    constraint customer_email_unique unique (email)
);

create index customer_kyc_status_idx on customer (kyc_status, customer_id);

create table kyc_event (
    kyc_event_id uuid primary key,
    customer_id uuid not null,
    from_status text not null,
    to_status text not null,
    actor text not null,
    reason text not null,
    created_at timestamptz not null,
    constraint kyc_event_customer_fk foreign key (customer_id) references customer (customer_id)
);

create index kyc_event_customer_idx on kyc_event (customer_id, kyc_event_id);

-- The history is the audit trail: nobody edits it, not even the owner.
create function forbid_history_change() returns trigger language plpgsql as $$
begin
    raise exception '% on % is not allowed: the table is append-only', tg_op, tg_table_name
        using errcode = 'insufficient_privilege';
end
$$;

create trigger kyc_event_append_only
    before update or delete on kyc_event
    for each row execute function forbid_history_change();

create table idempotency_key (
    idempotency_key text primary key,
    fingerprint bytea not null,
    response bytea,
    created_at timestamptz not null,
    expires_at timestamptz not null
);

create index idempotency_key_expires_idx on idempotency_key (expires_at);
