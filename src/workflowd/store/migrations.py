"""Forward-only schema migrations. Append a new tuple to change the schema; never edit one that
has shipped. Each tuple runs in one transaction at start. A statement is SQLite's text (turned
into PostgreSQL's by the dialect), or `PerDialect` where the two differ beyond types."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PerDialect:
    """The statements of one step, written for each database (a trigger: their languages
    differ)."""

    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]

    def statements(self, dialect: str) -> tuple[str, ...]:
        return self.postgresql if dialect == "postgresql" else self.sqlite


MIGRATIONS: tuple[tuple[str | PerDialect, ...], ...] = (
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
    (
        # Per-company quotas: the bytes of run values each company stores, a running total kept
        # in the transactions that store them (existing values are counted here, by the
        # characters of their JSON text); and active runs counted by company.
        """
        CREATE TABLE company_usage (
            company TEXT PRIMARY KEY,
            stored_bytes INTEGER NOT NULL DEFAULT 0
        )
        """,
        """
        INSERT INTO company_usage (company, stored_bytes)
        SELECT r.company, SUM(
            LENGTH(r.input) + LENGTH(r.context) + COALESCE(LENGTH(r.output), 0)
            + COALESCE(t.stored, 0)
        )
        FROM runs AS r LEFT JOIN (
            SELECT run_id, SUM(
                COALESCE(LENGTH(input), 0) + COALESCE(LENGTH(job_request), 0)
                + COALESCE(LENGTH(output), 0)
            ) AS stored
            FROM task_instances GROUP BY run_id
        ) AS t ON t.run_id = r.id
        GROUP BY r.company
        """,
        """
        CREATE INDEX runs_company_active ON runs (company)
        WHERE status IN ('pending', 'running', 'cancelling')
        """,
    ),
    (
        # Each company's events are numbered 1, 2, 3… in commit order (`company_seq`): the
        # `global_seq` a company sees, so that its cursors count nothing of other companies'.
        # A trigger numbers every insert, whichever process (or version) writes it; under the
        # store's write lock (SQLite's one writer, PostgreSQL's advisory lock), so in commit
        # order. `global_seq` stays the log's own order, for the replicas' follower.
        "CREATE TABLE company_sequences (company TEXT PRIMARY KEY, last_seq INTEGER NOT NULL)",
        "ALTER TABLE run_events ADD COLUMN company_seq INTEGER NOT NULL DEFAULT 0",
        """
        UPDATE run_events SET company_seq = numbered.n FROM (
            SELECT global_seq AS g,
                ROW_NUMBER() OVER (PARTITION BY company ORDER BY global_seq) AS n
            FROM run_events
        ) AS numbered WHERE run_events.global_seq = numbered.g
        """,
        """
        INSERT INTO company_sequences (company, last_seq)
        SELECT company, MAX(company_seq) FROM run_events GROUP BY company
        """,
        """
        CREATE UNIQUE INDEX run_events_by_company_seq ON run_events (company, company_seq)
        WHERE company_seq > 0
        """,
        PerDialect(
            sqlite=(
                """
                CREATE TRIGGER number_run_event AFTER INSERT ON run_events
                BEGIN
                    INSERT INTO company_sequences (company, last_seq) VALUES (NEW.company, 1)
                        ON CONFLICT (company) DO UPDATE SET last_seq = last_seq + 1;
                    UPDATE run_events SET company_seq =
                        (SELECT last_seq FROM company_sequences WHERE company = NEW.company)
                    WHERE global_seq = NEW.global_seq;
                END
                """,
            ),
            postgresql=(
                """
                CREATE FUNCTION number_run_event() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    INSERT INTO company_sequences AS s (company, last_seq)
                        VALUES (NEW.company, 1)
                        ON CONFLICT (company) DO UPDATE SET last_seq = s.last_seq + 1
                        RETURNING s.last_seq INTO NEW.company_seq;
                    RETURN NEW;
                END
                $$
                """,
                """
                CREATE TRIGGER number_run_event BEFORE INSERT ON run_events
                FOR EACH ROW EXECUTE FUNCTION number_run_event()
                """,
            ),
        ),
        # Secrets the store keeps for every process that shares it (the page tokens' key).
        "CREATE TABLE store_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
    (
        # Re-runs: a run may re-run another (`rerun_of`), replaying the instances before a
        # place in that run's order (`replay_until`) and showing them as reused; it keeps the
        # instant it re-runs, so an instant's one run is the one that is no re-run.
        "ALTER TABLE runs ADD COLUMN rerun_of TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE runs ADD COLUMN replay_until INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE task_instances ADD COLUMN reused INTEGER NOT NULL DEFAULT 0",
        "DROP INDEX runs_scheduled",
        """
        CREATE UNIQUE INDEX runs_scheduled ON runs (workflow_id, scheduled_at)
        WHERE scheduled_at IS NOT NULL AND rerun_of = ''
        """,
        "CREATE INDEX runs_rerun_of ON runs (rerun_of) WHERE rerun_of != ''",
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
    # The web page's run listings: newest first within one status, one trigger kind, or one
    # workflow's runs of one status (its last success), without walking every run.
    (
        "CREATE INDEX runs_company_status_seq ON runs (company, status, seq)",
        "CREATE INDEX runs_company_trigger_seq ON runs (company, trigger, seq)",
        "CREATE INDEX runs_workflow_status_seq ON runs (workflow_id, status, seq)",
    ),
    # SQLite: a run's change numbers its events in the company's sequence itself, all of them
    # in one statement (`RunTx.close`), instead of a trigger that moved the sequence and
    # rewrote each row just inserted. Its one process and one writer number them in commit
    # order, and no older workflowd writes to a schema newer than it knows. PostgreSQL keeps
    # its trigger: replicas of different versions may share the store during an upgrade.
    (PerDialect(sqlite=("DROP TRIGGER number_run_event",), postgresql=()),),
    # Issue 18: a schedule's runs get the schedule's input. Runs are deleted (on request, by
    # retention policies): what another run needs of them is found by index, and each
    # company's newest deleted event is remembered, so a watcher resuming from before it is
    # told.
    (
        "ALTER TABLE schedules ADD COLUMN input TEXT NOT NULL DEFAULT '{}'",
        "CREATE INDEX runs_after_run_id ON runs (after_run_id) WHERE after_run_id != ''",
        "CREATE INDEX jobs_to_cancel_run ON jobs_to_cancel (run_id)",
        "ALTER TABLE company_sequences ADD COLUMN pruned_through INTEGER NOT NULL DEFAULT 0",
        # Retention policies of a namespace (workflow_id '') or of one workflow.
        """
        CREATE TABLE retention_policies (
            company TEXT NOT NULL,
            namespace TEXT NOT NULL,
            workflow_id TEXT NOT NULL DEFAULT '',
            keep_s REAL,
            keep_last INTEGER NOT NULL DEFAULT 0,
            keep_failed_s REAL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (company, namespace, workflow_id)
        )
        """,
    ),
)
