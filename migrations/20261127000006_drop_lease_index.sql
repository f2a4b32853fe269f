-- Leases are renewed and released by primary key now; this index only cost an
-- insert on every claim and every result write.
DROP INDEX batch_numbers_lease;
