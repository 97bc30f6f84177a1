-- One customer per person: a national id is unique within its issuing
-- country. A unique index, not a read-then-insert check, so two concurrent
-- creates of the same person cannot both succeed. The id is stored as
-- validated (upper case, trimmed), so equal ids compare equal.
alter table customer
    add constraint customer_national_id_unique unique (country, national_id);
