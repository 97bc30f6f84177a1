-- Accounts, holds, and the append-only double-entry ledger.
-- Runs with search_path = account.
--
-- Amounts are numeric(28, 8): within rust_decimal's 28 significant digits and
-- finer than any ISO 4217 exponent. Entry amounts are positive; `direction`
-- says which way they move the account's ledger balance (credit adds).

create table account (
    account_id uuid primary key,
    customer_id uuid not null,
    currency text not null,
    product text not null,
    status text not null default 'active',
    overdraft_limit numeric(28, 8) not null default 0,
    ledger_balance numeric(28, 8) not null default 0,
    held_amount numeric(28, 8) not null default 0,
    -- The sequence number of the account's last entry: entries are ordered by
    -- it, and it is bumped by the same UPDATE that locks the row and moves the balance.
    last_entry_seq bigint not null default 0,
    created_at timestamptz not null,
    updated_at timestamptz not null,
    constraint account_currency_code check (currency ~ '^[A-Z]{3}$'),
    constraint account_product_known check (product in ('checking', 'savings', 'settlement')),
    constraint account_status_known check (status in ('active', 'frozen', 'closed')),
    constraint account_overdraft_non_negative check (overdraft_limit >= 0),
    constraint account_held_non_negative check (held_amount >= 0),
    -- Only the bank's settlement accounts may go below their overdraft limit.
    constraint account_available_within_overdraft
        check (product = 'settlement' or ledger_balance - held_amount + overdraft_limit >= 0),
    constraint account_currency_unique unique (account_id, currency)
);

create index account_customer_idx on account (customer_id, account_id);

-- One settlement account per currency, created on first use.
create unique index account_settlement_currency_unique on account (currency) where product = 'settlement';

-- Freeze, unfreeze, close (and open): who and why. Append-only.
create table account_event (
    account_event_id uuid primary key,
    account_id uuid not null,
    action text not null,
    from_status text,
    to_status text not null,
    actor text not null,
    reason text not null,
    created_at timestamptz not null,
    constraint account_event_account_fk foreign key (account_id) references account (account_id),
    constraint account_event_action_known check (action in ('open', 'freeze', 'unfreeze', 'close'))
);

create index account_event_account_idx on account_event (account_id, account_event_id);

create table journal (
    journal_id uuid primary key,
    kind text not null,
    reference text not null,
    hold_id uuid,
    created_at timestamptz not null,
    constraint journal_kind_known check (kind in ('transfer', 'deposit', 'withdrawal'))
);

-- A hold is captured into at most one journal.
create unique index journal_hold_unique on journal (hold_id) where hold_id is not null;

create table entry (
    entry_id uuid primary key,
    journal_id uuid not null,
    account_id uuid not null,
    currency text not null,
    direction text not null,
    amount numeric(28, 8) not null,
    -- The account's ledger balance right after this entry.
    balance_after numeric(28, 8) not null,
    account_seq bigint not null,
    created_at timestamptz not null,
    constraint entry_journal_fk foreign key (journal_id) references journal (journal_id),
    -- The entry's currency is its account's currency.
    constraint entry_account_fk foreign key (account_id, currency) references account (account_id, currency),
    constraint entry_direction_known check (direction in ('debit', 'credit')),
    constraint entry_amount_positive check (amount > 0),
    constraint entry_account_seq_unique unique (account_id, account_seq)
);

create index entry_journal_idx on entry (journal_id);

create table hold (
    hold_id uuid primary key,
    account_id uuid not null,
    currency text not null,
    amount numeric(28, 8) not null,
    status text not null default 'active',
    reference text not null,
    expires_at timestamptz not null,
    journal_id uuid,
    created_at timestamptz not null,
    updated_at timestamptz not null,
    constraint hold_account_fk foreign key (account_id, currency) references account (account_id, currency),
    constraint hold_journal_fk foreign key (journal_id) references journal (journal_id)
        deferrable initially deferred,
    constraint hold_amount_positive check (amount > 0),
    constraint hold_status_known check (status in ('active', 'captured', 'released', 'expired')),
    constraint hold_captured_has_journal check ((status = 'captured') = (journal_id is not null))
);

create index hold_account_active_idx on hold (account_id) where status = 'active';
create index hold_active_expiry_idx on hold (expires_at) where status = 'active';

-- History and ledger rows are the audit trail: nobody edits them, not even the owner.
-- Trigger functions keep the migration's search path, so they find their
-- tables whoever fires them.
create function forbid_history_change() returns trigger language plpgsql
set search_path from current as $$
begin
    raise exception '% on % is not allowed: the table is append-only', tg_op, tg_table_name
        using errcode = 'insufficient_privilege';
end
$$;

create trigger journal_append_only
    before update or delete on journal
    for each row execute function forbid_history_change();

create trigger entry_append_only
    before update or delete on entry
    for each row execute function forbid_history_change();

create trigger account_event_append_only
    before update or delete on account_event
    for each row execute function forbid_history_change();

-- Double entry: at commit, every journal an inserted entry belongs to sums to
-- zero per currency.
create function check_journal_balanced() returns trigger language plpgsql
set search_path from current as $$
declare
    unbalanced_currency text;
begin
    select e.currency into unbalanced_currency
    from entry e
    where e.journal_id = new.journal_id
    group by e.currency
    having sum(case e.direction when 'credit' then e.amount else -e.amount end) <> 0
    limit 1;
    if found then
        raise exception 'journal % does not balance in %', new.journal_id, unbalanced_currency
            using errcode = 'check_violation', constraint = 'entry_journal_balanced';
    end if;
    return null;
end
$$;

create constraint trigger entry_journal_balanced
    after insert on entry
    deferrable initially deferred
    for each row execute function check_journal_balanced();

-- A journal without entries is not a posting.
create function check_journal_has_entries() returns trigger language plpgsql
set search_path from current as $$
begin
    if not exists (select 1 from entry where journal_id = new.journal_id) then
        raise exception 'journal % has no entries', new.journal_id
            using errcode = 'check_violation', constraint = 'journal_has_entries';
    end if;
    return null;
end
$$;

create constraint trigger journal_has_entries
    after insert on journal
    deferrable initially deferred
    for each row execute function check_journal_has_entries();

-- The hold state machine: active → captured | released | expired, nothing
-- else, and a hold's account and amount never change.
create function check_hold_transition() returns trigger language plpgsql
set search_path from current as $$
begin
    if old.status <> 'active' or new.status = 'active' then
        raise exception 'hold % cannot move from % to %', old.hold_id, old.status, new.status
            using errcode = 'check_violation', constraint = 'hold_status_transition';
    end if;
    if new.account_id <> old.account_id or new.amount <> old.amount or new.currency <> old.currency
        or new.hold_id <> old.hold_id then
        raise exception 'hold % is immutable but for its status', old.hold_id
            using errcode = 'check_violation', constraint = 'hold_status_transition';
    end if;
    return new;
end
$$;

create trigger hold_status_transition
    before update on hold
    for each row execute function check_hold_transition();

create trigger hold_no_delete
    before delete on hold
    for each row execute function forbid_history_change();

create table idempotency_key (
    idempotency_key text primary key,
    fingerprint bytea not null,
    response bytea,
    created_at timestamptz not null,
    expires_at timestamptz not null
);

create index idempotency_key_expires_idx on idempotency_key (expires_at);
