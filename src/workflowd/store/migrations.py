"""Forward-only schema migrations. Append a new tuple to change the schema; never edit one that
has shipped. Each tuple runs in one transaction at start."""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE workflows (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            company TEXT NOT NULL,
            namespace TEXT NOT NULL,
            name TEXT NOT NULL,
            current_version TEXT NOT NULL,
            tags TEXT NOT NULL DEFAULT '[]',
            status TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            archived_at TEXT,
            UNIQUE (company, namespace, name)
        )
        """,
        "CREATE INDEX workflows_company_seq ON workflows (company, seq)",
        """
        CREATE TABLE workflow_versions (
            workflow_id TEXT NOT NULL REFERENCES workflows (id),
            version TEXT NOT NULL,
            ordinal INTEGER NOT NULL,
            specification TEXT NOT NULL,
            spec_sha256 TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (workflow_id, version)
        )
        """,
        """
        CREATE TABLE runs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            company TEXT NOT NULL,
            workflow_id TEXT NOT NULL REFERENCES workflows (id),
            namespace TEXT NOT NULL,
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            status TEXT NOT NULL,
            trigger TEXT NOT NULL,
            input TEXT NOT NULL,
            context TEXT NOT NULL DEFAULT '{}',
            output TEXT,
            error TEXT,
            created_at TEXT NOT NULL,
            started_at TEXT,
            ended_at TEXT,
            scheduled_at TEXT,
            idempotency_key TEXT NOT NULL DEFAULT '',
            last_seq INTEGER NOT NULL DEFAULT 0
        )
        """,
        """
        CREATE UNIQUE INDEX runs_idempotency ON runs (company, workflow_id, idempotency_key)
        WHERE idempotency_key != ''
        """,
        "CREATE INDEX runs_company_seq ON runs (company, seq)",
        "CREATE INDEX runs_workflow_seq ON runs (workflow_id, seq)",
        """
        CREATE INDEX runs_active ON runs (status)
        WHERE status IN ('pending', 'running', 'cancelling')
        """,
        """
        CREATE TABLE tasks (
            run_id TEXT NOT NULL REFERENCES runs (id),
            idx INTEGER NOT NULL,
            name TEXT NOT NULL,
            call TEXT NOT NULL,
            reference TEXT NOT NULL,
            status TEXT NOT NULL,
            job_id TEXT NOT NULL DEFAULT '',
            job_request TEXT,
            input TEXT,
            output TEXT,
            error TEXT,
            started_at TEXT,
            ended_at TEXT,
            PRIMARY KEY (run_id, idx)
        )
        """,
        """
        CREATE TABLE run_events (
            global_seq INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL REFERENCES runs (id),
            seq INTEGER NOT NULL,
            company TEXT NOT NULL,
            workflow_id TEXT NOT NULL,
            namespace TEXT NOT NULL,
            type TEXT NOT NULL,
            time TEXT NOT NULL,
            run_status TEXT NOT NULL,
            task_index INTEGER NOT NULL DEFAULT -1,
            task_name TEXT NOT NULL DEFAULT '',
            task_status TEXT,
            job_id TEXT NOT NULL DEFAULT '',
            error TEXT,
            UNIQUE (run_id, seq)
        )
        """,
    ),
    (
        # Schedules (one per workflow), what each decided, and runs that wait for another
        # (a buffered or cancel-other fire, a backfill chain) before they start.
        """
        CREATE TABLE schedules (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            workflow_id TEXT NOT NULL UNIQUE REFERENCES workflows (id),
            company TEXT NOT NULL,
            namespace TEXT NOT NULL,
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            cron TEXT NOT NULL DEFAULT '',
            timezone TEXT NOT NULL DEFAULT 'UTC',
            every_s REAL,
            active INTEGER NOT NULL,
            overlap TEXT NOT NULL,
            catchup TEXT NOT NULL,
            catchup_window_s REAL NOT NULL,
            anchor TEXT NOT NULL,
            next_fire_at TEXT,
            last_fire_at TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )
        """,
        "CREATE INDEX schedules_company_seq ON schedules (company, seq)",
        """
        CREATE TABLE schedule_decisions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            workflow_id TEXT NOT NULL REFERENCES workflows (id),
            instant TEXT NOT NULL,
            outcome TEXT NOT NULL,
            run_id TEXT NOT NULL DEFAULT '',
            reason TEXT NOT NULL,
            decided_at TEXT NOT NULL,
            UNIQUE (workflow_id, instant)
        )
        """,
        "ALTER TABLE runs ADD COLUMN after_run_id TEXT NOT NULL DEFAULT ''",
        # One run per workflow and instant, whoever creates it: the scheduler (even two of
        # them, or one restarted after a crash), a catch-up or a backfill.
        """
        CREATE UNIQUE INDEX runs_scheduled ON runs (workflow_id, scheduled_at)
        WHERE scheduled_at IS NOT NULL
        """,
    ),
    (
        # Who or what cancelled a run, on the run and its events; and jobs that may still run
        # although their task ended (cancelled in the background until confirmed).
        "ALTER TABLE runs ADD COLUMN cancel_reason TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE run_events ADD COLUMN reason TEXT NOT NULL DEFAULT ''",
        """
        CREATE TABLE jobs_to_cancel (
            job_id TEXT PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs (id),
            task_index INTEGER NOT NULL,
            since TEXT NOT NULL
        )
        """,
    ),
    (
        # Replicas sharing one store: each holds a lease it renews while it lives, and a run
        # belongs to the replica executing it; a run whose owner's lease ran out is adopted.
        """
        CREATE TABLE replicas (
            id TEXT PRIMARY KEY,
            lease_until TEXT NOT NULL,
            started_at TEXT NOT NULL
        )
        """,
        "ALTER TABLE runs ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
    ),
    (
        # Task instances: a run is no longer a list of tasks numbered by position, but the
        # executions of a definition tree (loops, branches, retries), each named by its key
        # (reference + iteration/attempt path) and created when it starts. Old runs' started
        # tasks become instances keyed by their reference (their jobs keep their idempotency
        # keys, `run_id:index`, which their stored requests carry); their PENDING tasks go, as
        # an instance exists only once it started. The cursor is where a run's interpretation
        # stands.
        """
        CREATE TABLE task_instances (
            run_id TEXT NOT NULL REFERENCES runs (id),
            key TEXT NOT NULL,
            ord INTEGER NOT NULL,
            reference TEXT NOT NULL,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            call TEXT NOT NULL DEFAULT '',
            position INTEGER NOT NULL DEFAULT -1,
            iteration TEXT NOT NULL DEFAULT '[]',
            attempt INTEGER NOT NULL DEFAULT 1,
            parent TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL,
            job_id TEXT NOT NULL DEFAULT '',
            job_request TEXT,
            input TEXT,
            output TEXT,
            error TEXT,
            reason TEXT NOT NULL DEFAULT '',
            started_at TEXT,
            ended_at TEXT,
            wake_at TEXT,
            PRIMARY KEY (run_id, key)
        )
        """,
        """
        INSERT INTO task_instances (run_id, key, ord, reference, name, kind, call, position,
            status, job_id, job_request, input, output, error, started_at, ended_at)
        SELECT run_id, reference, idx + 1, reference, name, 'call', call, idx, status, job_id,
            job_request, input, output, error, started_at, ended_at
        FROM tasks WHERE status != 'pending'
        """,
        "ALTER TABLE run_events ADD COLUMN task_key TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE run_events ADD COLUMN task_ref TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE run_events ADD COLUMN iteration TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE run_events ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE run_events ADD COLUMN until TEXT",
        """
        UPDATE run_events SET task_ref = (
            SELECT t.reference FROM tasks t
            WHERE t.run_id = run_events.run_id AND t.idx = run_events.task_index
        ), attempt = 1
        WHERE task_index >= 0
        """,
        """
        UPDATE run_events SET task_key = task_ref WHERE task_index >= 0
        """,
        "DROP TABLE tasks",
        "ALTER TABLE runs ADD COLUMN cursor TEXT",
        "ALTER TABLE jobs_to_cancel ADD COLUMN task_key TEXT NOT NULL DEFAULT ''",
    ),
    # Webhooks: the outbox of notices, one row per (event, destination), committed with the
    # event it tells of and delivered in the background until its deadline.
    (
        """
        CREATE TABLE webhook_outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            delivery_id TEXT NOT NULL UNIQUE,
            company TEXT NOT NULL,
            destination TEXT NOT NULL,
            event TEXT NOT NULL,
            workflow_id TEXT NOT NULL,
            namespace TEXT NOT NULL,
            name TEXT NOT NULL,
            run_id TEXT NOT NULL DEFAULT '',
            payload TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            next_at TEXT NOT NULL,
            deadline_at TEXT NOT NULL,
            last_attempt_at TEXT,
            claimed_until TEXT,
            last_error TEXT NOT NULL DEFAULT '',
            last_http_status INTEGER NOT NULL DEFAULT 0,
            ended_at TEXT
        )
        """,
        "CREATE INDEX webhook_outbox_due ON webhook_outbox (status, next_at)",
        "CREATE INDEX webhook_outbox_company ON webhook_outbox (company, seq)",
    ),
)
