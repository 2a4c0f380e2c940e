-- Schema 6: key sets seen before schema 4 and never issued get their form row at the upgrade,
-- not when a later scan or issuance happens to touch their carrier. Numbering needs the hash
-- chain (each row is recorded by an event), so this only marks the journal; the first open for
-- writing numbers them and removes the mark in one transaction (see journal/upgrade.rs).
INSERT INTO meta (key, value) VALUES ('upgrade:number_key_sets', 'pending');
