-- 0007.prune-in-batches.sql
-- prune and retry_dead take a batch size, so that no single transaction deletes or
-- requeues millions of rows: new signatures, so the old ones go.
drop function if exists pgq.prune(interval, boolean);
drop function if exists pgq.retry_dead(text);
