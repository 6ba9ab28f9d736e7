-- The project's own SQLSTATEs, in one place. Class PQ: PQ0xx bad arguments,
-- PQ1xx worker calls (fencing, run-once), PQ2xx operator calls.
create or replace view pgq.error_codes as
select v.sqlstate, v.name, v.meaning
  from (values
    ('PQ001', 'invalid_argument',
     'An argument is missing, empty, too large or out of range; the message names it. Nothing was changed.'),
    ('PQ101', 'lease_lost',
     'The job is not running under this lease token: the lease expired, the job was cancelled, or another worker holds it. Stop working on the job; nothing was changed.'),
    ('PQ102', 'marker_not_begun',
     'once_finish or once_abort named a run-once marker that this lease did not begin.'),
    ('PQ201', 'job_not_found',
     'No job has this id (it may have been pruned).'),
    ('PQ202', 'job_state_conflict',
     'The job is not in a state this operation applies to (for example retry of a job that is not dead or cancelled).'),
    ('PQ203', 'queue_not_found',
     'The queue was never configured nor used.'),
    ('PQ204', 'marker_not_found',
     'No run-once marker has this job id and effect key, or it is not in a state the operation applies to.')
  ) as v(sqlstate, name, meaning);
comment on view pgq.error_codes is
    'The SQLSTATE codes pgq raises, with their names and meanings.';
