-- Email and national id are unique within the customer's owner, not across
-- the bank. A partner's customers are its own relationships, and a bank-wide
-- rule turned CreateCustomer into a probe: the ALREADY_EXISTS one partner got
-- told it that a given person was another partner's customer. Customers the
-- bank's own staff created (no partner) are one owner of their own. The
-- index names stay those of the constraints they replace: the service maps
-- a violation to its error by that name.
alter table customer drop constraint customer_email_unique;
alter table customer drop constraint customer_national_id_unique;

create unique index customer_email_unique
    on customer (coalesce(partner_id, ''), email);
create unique index customer_national_id_unique
    on customer (coalesce(partner_id, ''), country, national_id);
