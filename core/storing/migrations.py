"""The store's schema, as sqlite-utils Migrations. A migration that has shipped is never edited."""

from sqlite_utils import Migrations

migrations = Migrations("w2s")


@migrations()
def m001_initial(db):
    db.execute(
        """
        CREATE TABLE studies (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            toml TEXT NOT NULL,
            spec_json TEXT NOT NULL,
            hash TEXT NOT NULL,
            path TEXT,
            created TEXT NOT NULL,
            updated TEXT,
            status TEXT NOT NULL,
            versions_json TEXT,
            notes TEXT
        )"""
    )
    db.execute("CREATE INDEX idx_studies_hash ON studies(hash)")
    db.execute(
        """
        CREATE TABLE stages (
            id TEXT PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            role TEXT NOT NULL,
            task TEXT,
            model TEXT,
            model_json TEXT,
            loss TEXT,
            seed INTEGER,
            spec_json TEXT,
            upstream_json TEXT,
            output_json TEXT,
            status TEXT NOT NULL,
            created TEXT NOT NULL,
            started TEXT,
            finished TEXT,
            seconds REAL,
            error TEXT,
            study_id TEXT REFERENCES studies(id)
        )"""
    )
    db.execute(
        """
        CREATE TABLE study_stages (
            study_id TEXT NOT NULL REFERENCES studies(id),
            stage_key TEXT NOT NULL REFERENCES stages(key),
            role TEXT NOT NULL,
            task TEXT,
            weak TEXT,
            strong TEXT,
            loss TEXT,
            seed INTEGER,
            PRIMARY KEY (study_id, stage_key, role)
        )"""
    )
    db.execute(
        """
        CREATE TABLE metrics (
            stage_key TEXT NOT NULL REFERENCES stages(key),
            split TEXT NOT NULL,
            name TEXT NOT NULL,
            value REAL,
            PRIMARY KEY (stage_key, split, name)
        )"""
    )
    db.execute(
        """
        CREATE TABLE curves (
            stage_key TEXT NOT NULL REFERENCES stages(key),
            step INTEGER NOT NULL,
            name TEXT NOT NULL,
            value REAL
        )"""
    )
    db.execute("CREATE INDEX idx_curves_stage ON curves(stage_key)")
    db.execute(
        """
        CREATE TABLE predictions (
            stage_key TEXT NOT NULL REFERENCES stages(key),
            split TEXT NOT NULL,
            example_id TEXT NOT NULL,
            prob REAL,
            probs_json TEXT NOT NULL,
            pred INTEGER NOT NULL,
            label INTEGER,
            PRIMARY KEY (stage_key, split, example_id)
        )"""
    )
    db.execute(
        """
        CREATE TABLE partial_predictions (
            stage_key TEXT NOT NULL,
            split TEXT NOT NULL,
            example_id TEXT NOT NULL,
            probs_json TEXT NOT NULL,
            created TEXT NOT NULL,
            PRIMARY KEY (stage_key, split, example_id)
        )"""
    )
    db.execute(
        """
        CREATE TABLE splits (
            key TEXT PRIMARY KEY,
            task TEXT NOT NULL,
            name TEXT NOT NULL,
            seed INTEGER,
            n INTEGER NOT NULL,
            ids_json TEXT NOT NULL,
            created TEXT NOT NULL
        )"""
    )
    db.execute(
        """
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            stage_key TEXT NOT NULL,
            provider TEXT NOT NULL,
            job_id TEXT NOT NULL,
            status TEXT,
            info_json TEXT,
            created TEXT NOT NULL,
            updated TEXT
        )"""
    )
    db.execute("CREATE INDEX idx_jobs_stage ON jobs(stage_key, provider)")
    db.execute(
        """
        CREATE TABLE artifacts (
            id TEXT PRIMARY KEY,
            stage_key TEXT NOT NULL REFERENCES stages(key),
            kind TEXT NOT NULL,
            path TEXT NOT NULL,
            bytes INTEGER,
            created TEXT NOT NULL
        )"""
    )
    db.execute(
        """
        CREATE VIEW results AS
        SELECT
            ss.study_id AS study_id,
            s.name AS study,
            ss.task AS task,
            ss.weak AS weak,
            ss.strong AS strong,
            ss.loss AS loss,
            ss.seed AS seed,
            (SELECT value FROM metrics m WHERE m.stage_key = ss.stage_key AND m.name = 'weak_acc') AS weak_acc,
            (SELECT value FROM metrics m WHERE m.stage_key = ss.stage_key AND m.name = 'student_acc') AS student_acc,
            (SELECT value FROM metrics m WHERE m.stage_key = ss.stage_key AND m.name = 'ceiling_acc') AS ceiling_acc,
            (SELECT value FROM metrics m WHERE m.stage_key = ss.stage_key AND m.name = 'pgr') AS pgr,
            (SELECT value FROM metrics m WHERE m.stage_key = ss.stage_key AND m.name = 'pgr_ci_low') AS pgr_ci_low,
            (SELECT value FROM metrics m WHERE m.stage_key = ss.stage_key AND m.name = 'pgr_ci_high') AS pgr_ci_high,
            (SELECT value FROM metrics m WHERE m.stage_key = ss.stage_key AND m.name = 'agreement') AS agreement,
            json_extract(st.output_json, '$.flags') AS flags,
            (SELECT value FROM metrics m WHERE m.stage_key = ss.stage_key AND m.name = 'n_test') AS n_test,
            st.status AS status
        FROM study_stages ss
        JOIN studies s ON s.id = ss.study_id
        JOIN stages st ON st.key = ss.stage_key
        WHERE ss.role = 'evaluate'
        """
    )


@migrations()
def m002_studies_fts(db):
    """Full-text search over study names and notes (studies_fts, kept in sync by triggers)."""
    db["studies"].enable_fts(["name", "notes"], fts_version="FTS5", create_triggers=True, tokenize="porter")


@migrations()
def m003_eval_prompts(db):
    """The rendered prompt of every example scored by a cross-task eval stage."""
    db.execute(
        """
        CREATE TABLE eval_prompts (
            stage_key TEXT NOT NULL REFERENCES stages(key),
            split TEXT NOT NULL,
            example_id TEXT NOT NULL,
            prompt TEXT NOT NULL,
            PRIMARY KEY (stage_key, split, example_id)
        )"""
    )


@migrations()
def m004_evaluations_view(db):
    """Every evaluate-like stage with its role: evaluate (headline), chain_step, chain_direct, oracle_evaluate."""
    metric = "(SELECT value FROM metrics m WHERE m.stage_key = ss.stage_key AND m.name = '{0}') AS {0}"
    columns = ",\n            ".join(
        metric.format(n) for n in ("weak_acc", "student_acc", "ceiling_acc", "baseline_acc", "pgr", "pgr_ci_low", "pgr_ci_high", "agreement", "n_test")
    )
    db.execute(
        f"""
        CREATE VIEW evaluations AS
        SELECT
            ss.study_id AS study_id, s.name AS study, ss.role AS role, ss.task AS task, ss.weak AS weak,
            ss.strong AS strong, ss.loss AS loss, ss.seed AS seed,
            {columns},
            json_extract(st.output_json, '$.flags') AS flags,
            st.status AS status
        FROM study_stages ss
        JOIN studies s ON s.id = ss.study_id
        JOIN stages st ON st.key = ss.stage_key
        WHERE ss.role IN ('evaluate', 'chain_step', 'chain_direct', 'oracle_evaluate')
        """
    )


@migrations()
def m005_stage_claims(db):
    """Stages claimed by one driver at a time (owner, heartbeat, worker) and every attempt to run one."""
    for column, kind in (("owner_json", "TEXT"), ("heartbeat", "REAL"), ("worker_json", "TEXT"), ("executor", "TEXT")):
        db.execute(f"ALTER TABLE stages ADD COLUMN {column} {kind}")
    db.execute(
        """
        CREATE TABLE stage_attempts (
            id TEXT PRIMARY KEY,
            stage_key TEXT NOT NULL,
            run_id TEXT NOT NULL,
            executor TEXT,
            owner_json TEXT,
            worker_json TEXT,
            started TEXT NOT NULL,
            finished TEXT,
            seconds REAL,
            status TEXT NOT NULL,
            error TEXT
        )"""
    )
    db.execute("CREATE INDEX idx_attempts_stage ON stage_attempts(stage_key)")


@migrations()
def m006_legacy_keys(db):
    """Stage keys became content-addressed (no absolute data paths, only non-default options). Every stage
    stored before keeps its old key in `legacy_key`; a run whose plan finds a done stage under the old key
    renames it to the new key in every table (Store.rekey), so older results stay cached and visible."""
    db.execute("ALTER TABLE stages ADD COLUMN legacy_key TEXT")
    db.execute("UPDATE stages SET legacy_key = key")
    db.execute("CREATE INDEX idx_stages_legacy ON stages(legacy_key)")


@migrations()
def m007_scale_indexes(db):
    """Indexes for stores of thousands of studies: study list and show, the results views, artifacts, links.

    Measured by benchmarks/store_scale.py (issue 16). `study list` walks studies newest first and
    `study show NAME` finds a study by name; the `results` and `evaluations` views read each evaluate
    stage's metrics by (stage_key, name) from one covering index and pick evaluate links by role; artifacts are looked up by stage (checkpoints, the disk per study, delete);
    study links by stage (rekey, shared stages, delete); `w2s gc` and the claims look for running stages, and
    every plan asks whether any stage still has its scheme-1 key (partial indexes: only those rows)."""
    for sql in (
        "CREATE INDEX idx_studies_created ON studies(created, id)",
        "CREATE INDEX idx_studies_name ON studies(name)",
        "CREATE INDEX idx_metrics_name ON metrics(stage_key, name, value)",
        "CREATE INDEX idx_study_stages_role ON study_stages(role, study_id)",
        "CREATE INDEX idx_study_stages_key ON study_stages(stage_key)",
        "CREATE INDEX idx_artifacts_stage ON artifacts(stage_key, kind)",
        "CREATE INDEX idx_stages_running ON stages(status) WHERE status = 'running'",
        "CREATE INDEX idx_stages_unrekeyed ON stages(key) WHERE legacy_key = key",
    ):
        db.execute(sql)


@migrations()
def m008_instant_reruns(db):
    """studies.rerun_json: what a finished study's rerun is answered from, without planning (data files, code, links, stage titles).

    Written by the driver when a run ends with every stage done: {"files": [{path, size, mtime_ns, sha256}],
    "code": fingerprint, "links": fingerprint, "titles": [stage titles in plan order]}; NULL while it runs, or
    when a task cannot name its local files (a hub data set). `w2s study run` answers from it while the
    definition, versions, code and data files are unchanged (core/running/instant.py)."""
    db.execute("ALTER TABLE studies ADD COLUMN rerun_json TEXT")
