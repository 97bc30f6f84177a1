-- The partner that owns each account's customer (null: the bank's own), so
-- a partner's requests reach only its own accounts. Copied from the customer
-- service when the account opens; a customer never changes partner.
alter table account add column partner_id text;

create index account_partner_idx on account (partner_id, customer_id, account_id)
    where partner_id is not null;
