-- The partner whose token created each customer (null: created by the
-- bank's own staff). A partner reaches only its own customers, and through
-- them their accounts and transactions.
alter table customer add column partner_id text;

create index customer_partner_idx on customer (partner_id, customer_id)
    where partner_id is not null;
