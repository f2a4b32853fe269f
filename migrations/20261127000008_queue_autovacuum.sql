-- Where autovacuum runs, vacuum the numbers table after a fixed count of dead rows,
-- not after a fifth of a table that keeps weeks of finished numbers: the claim
-- index's dead entries are what every claim reads first (src/vacuum.rs does this
-- itself when autovacuum is off).
ALTER TABLE batch_numbers SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 200000,
    autovacuum_analyze_scale_factor = 0.02
);
