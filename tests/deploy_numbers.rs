//! The FlowStack recipes agree with each other and with the unit files:
//! docs/deploy.md "The numbers". The source of the numbers is the Terraform
//! module's variable defaults (deploy/terraform/modules/flowstack): the
//! Dockerfile's HEALTHCHECK, the rendered ECS task definition and service
//! shown in docs/deploy.md, its table, and the Kubernetes pod spec (in
//! docs/deploy.md and deploy/kubernetes/) must agree with them. Flowise gets
//! its whole readiness `start_timeout` before a failing health check
//! counts, the orchestrators' grace leaves 2 s after flowinit's shutdown
//! budget, the ALB's deregistration delay plus the router's drain fit in the
//! budget, and the ALB's idle timeout stays below the router's
//! header_timeout. (The module's own `terraform test` checks the same
//! relations on the planned resources.)

use regex::Regex;
use std::path::Path;
use std::time::Duration;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

/// Every capture of `pattern`'s first group in `text`, as numbers.
fn all(text: &str, pattern: &str) -> Vec<u64> {
    let re = Regex::new(pattern).unwrap();
    re.captures_iter(text).map(|c| c[1].parse().unwrap()).collect()
}

/// The one value of `pattern` in `text` (every occurrence must agree).
fn one(what: &str, text: &str, pattern: &str) -> u64 {
    let found = all(text, pattern);
    assert!(!found.is_empty(), "{what}: no match for {pattern}");
    assert!(found.iter().all(|v| *v == found[0]), "{what}: values disagree: {found:?}");
    found[0]
}

const TF_MODULE: &str = "deploy/terraform/modules/flowstack";

/// The default of `variable "name"` in the module's variables.tf (a number).
fn tf_default(name: &str) -> u64 {
    let vars = read(&format!("{TF_MODULE}/variables.tf"));
    let start =
        vars.find(&format!("variable \"{name}\" {{")).unwrap_or_else(|| panic!("variable {name} in variables.tf"));
    let block = &vars[start..];
    let block = &block[..block[1..].find("\nvariable \"").map_or(block.len(), |i| i + 1)];
    one(&format!("default of {name}"), block, r"\n  default\s*=\s*(\d+)")
}

/// A number in the module's locals: `key = N` in main.tf.
fn tf_local(key: &str) -> u64 {
    one(&format!("local {key}"), &read(&format!("{TF_MODULE}/main.tf")), &format!(r"\n\s*{key}\s*=\s*(\d+)"))
}

fn flowise_start_timeout() -> Duration {
    let unit: toml::Table = toml::from_str(&read("units/flowise.toml")).unwrap();
    let s = unit["readiness"]["start_timeout"].as_str().unwrap();
    humantime::parse_duration(s).unwrap()
}

#[test]
fn health_checks_wait_for_flowise_first_boot_everywhere() {
    let start_timeout = flowise_start_timeout().as_secs();
    let dockerfile = read("Dockerfile");
    let deploy = read("docs/deploy.md");
    // Terraform: flowise_start_timeout (the unit's) + 20 s is the startPeriod.
    assert_eq!(
        tf_default("flowise_start_timeout"),
        start_timeout,
        "variable flowise_start_timeout vs units/flowise.toml"
    );
    let main_tf = read(&format!("{TF_MODULE}/main.tf"));
    assert!(
        main_tf.contains("startPeriod = var.flowise_start_timeout + 20"),
        "main.tf: startPeriod = var.flowise_start_timeout + 20"
    );
    let start_period = tf_default("flowise_start_timeout") + 20;
    assert_eq!(
        one("Dockerfile HEALTHCHECK", &dockerfile, r"--start-period=(\d+)s"),
        start_period,
        "HEALTHCHECK --start-period must be the module's startPeriod (Flowise's start_timeout {start_timeout}s + 20s)"
    );
    assert_eq!(one("ECS healthCheck", &deploy, r#""startPeriod": (\d+)"#), start_period, "ECS startPeriod");
    assert_eq!(
        one("ECS service", &deploy, r#""healthCheckGracePeriodSeconds": (\d+)"#),
        start_period,
        "ECS healthCheckGracePeriodSeconds"
    );
    // Kubernetes: the startupProbe's period × failureThreshold.
    let k8s = &deploy[deploy.find("startupProbe:").expect("a startupProbe in deploy.md")..];
    let period = one("startupProbe", &k8s[..k8s.find("readinessProbe").unwrap()], r"periodSeconds: (\d+)");
    let failures = one("startupProbe", &k8s[..k8s.find("readinessProbe").unwrap()], r"failureThreshold: (\d+)");
    assert_eq!(period * failures, start_period, "Kubernetes startupProbe {period}s × {failures}");
    // The table states the same numbers.
    assert!(
        deploy.contains(&format!("| Flowise readiness `start_timeout` | {start_timeout} s |")),
        "table: start_timeout"
    );
    assert!(
        deploy.contains(&format!("| {start_period} s | Flowise's `start_timeout` + 20 s |")),
        "table: start period"
    );
    // Interval, timeout and retries: the module's, the Dockerfile's and the
    // rendered ECS task definition in deploy.md agree.
    for (flag, key) in [("interval", "interval"), ("timeout", "timeout"), ("retries", "retries")] {
        let tf = tf_local(key);
        let docker = one("Dockerfile", &dockerfile, &format!(r"--{flag}=(\d+)s?\b"));
        let ecs = one("ECS", &deploy, &format!(r#""{key}": (\d+)"#));
        assert_eq!(docker, tf, "HEALTHCHECK --{flag} vs the module's health_check.{key}");
        assert_eq!(ecs, tf, "deploy.md healthCheck.{key} vs the module's health_check.{key}");
    }
}

#[test]
fn orchestrators_grace_is_the_budget_plus_two_seconds() {
    let deploy = read("docs/deploy.md");
    let budget = tf_default("shutdown_budget");
    let main_tf = read(&format!("{TF_MODULE}/main.tf"));
    assert!(main_tf.contains("stop_timeout = var.shutdown_budget + 2"), "main.tf: stopTimeout = budget + 2");
    assert!(
        read(&format!("{TF_MODULE}/main.tf")).contains(r#"FLOWINIT_SHUTDOWN_TIMEOUT = "${var.shutdown_budget}s""#),
        "main.tf: FLOWINIT_SHUTDOWN_TIMEOUT from shutdown_budget"
    );
    assert_eq!(
        one("FLOWINIT_SHUTDOWN_TIMEOUT", &deploy, r#"FLOWINIT_SHUTDOWN_TIMEOUT"?, "?value"?:? "(\d+)s""#),
        budget,
        "deploy.md FLOWINIT_SHUTDOWN_TIMEOUT vs shutdown_budget"
    );
    assert_eq!(one("ECS stopTimeout", &deploy, r#""stopTimeout": (\d+)"#), budget + 2);
    assert!(budget + 2 <= 120, "Fargate's stopTimeout is at most 120 s");
    assert_eq!(one("Kubernetes grace", &deploy, r"terminationGracePeriodSeconds: (\d+)"), budget + 2);
    assert!(deploy.contains(&format!("| `FLOWINIT_SHUTDOWN_TIMEOUT` | {budget} s |")), "table: budget");
    assert!(
        deploy
            .contains(&format!("| ECS `stopTimeout`, Kubernetes `terminationGracePeriodSeconds` | {} s |", budget + 2)),
        "table: stopTimeout"
    );
    // The Kubernetes manifests (deploy/kubernetes/) use the same budget.
    let k8s_main = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/deployment-main.yaml");
    if k8s_main.exists() {
        let k8s = std::fs::read_to_string(k8s_main).unwrap();
        assert_eq!(
            one("k8s grace", &k8s, r"terminationGracePeriodSeconds: (\d+)"),
            budget + 2,
            "deploy/kubernetes grace"
        );
        assert_eq!(
            one("k8s budget", &k8s, r#"FLOWINIT_SHUTDOWN_TIMEOUT\s+value: "?(\d+)s"#),
            budget,
            "deploy/kubernetes FLOWINIT_SHUTDOWN_TIMEOUT"
        );
    }
}

#[test]
fn the_albs_deregistration_delay_and_the_routers_drain_fit_in_the_budget() {
    let drain = tf_default("router_drain");
    assert_eq!(
        Duration::from_secs(drain),
        flowinit::config::unit::DEFAULT_ROUTER_STOP_TIMEOUT,
        "variable router_drain vs the router's default stop_timeout"
    );
    let router: toml::Table = toml::from_str(&read("units/router.toml")).unwrap();
    assert!(router["router"].get("stop_timeout").is_none(), "the shipped router keeps the default drain");
    let delay = tf_default("deregistration_delay");
    let budget = tf_default("shutdown_budget");
    assert!(delay + drain <= budget, "deregistration_delay {delay} + router drain {drain} > budget {budget}");
    let deploy = read("docs/deploy.md");
    assert!(deploy.contains(&format!("| router drain | {drain} s |")), "table: router drain");
    assert!(
        deploy.contains(&format!("| ALB target group deregistration delay | {delay} s |")),
        "table: deregistration delay"
    );
    assert!(
        read(&format!("{TF_MODULE}/alb.tf"))
            .contains("condition     = var.deregistration_delay + var.router_drain <= var.shutdown_budget"),
        "alb.tf: the target group's precondition"
    );
}

#[test]
fn the_router_outlives_the_albs_idle_timeout() {
    // An ALB reuses idle connections for 60 s: the router must not close
    // them first (docs/router.md), or the ALB meets a closed connection.
    let default = flowinit::config::unit::DEFAULT_ROUTER_HEADER_TIMEOUT;
    assert!(default > Duration::from_secs(60), "router header_timeout {default:?} <= the ALB's 60 s");
    let deploy = read("docs/deploy.md");
    assert!(
        deploy.contains(&format!("the router's `header_timeout`, {} s", default.as_secs())),
        "deploy.md names the router's header_timeout"
    );
    // The module: its header_timeout is the router's, and the ALB's idle
    // timeout (validated against it) stays below.
    assert_eq!(tf_local("router_header_timeout"), default.as_secs(), "main.tf router_header_timeout");
    let idle = tf_default("alb_idle_timeout");
    assert!(idle < default.as_secs(), "alb_idle_timeout {idle} >= header_timeout");
    assert!(deploy.contains(&format!("| ALB idle timeout | {idle} s |")), "table: idle timeout");
    let router: toml::Table = toml::from_str(&read("units/router.toml")).unwrap();
    assert!(router["router"].get("header_timeout").is_none(), "the shipped router keeps the default");
}

/// Runs the real `flowinit check` on a copy of the shipped units (run as
/// this machine's root instead of the image's `node`, which does not exist
/// here) with a clean environment plus `env`; returns (exit code, stderr).
#[allow(clippy::disallowed_methods)]
fn check_shipped_units(env: &[(&str, &str)], profile: Option<&str>) -> (i32, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = std::env::temp_dir().join(format!("fi-prod-defaults-{}-{run}", std::process::id()));
    let units = tmp.join("units");
    std::fs::create_dir_all(&units).unwrap();
    for entry in std::fs::read_dir(root.join("units")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap().replace("user = \"node\"", "user = \"root\"");
            std::fs::write(units.join(path.file_name().unwrap()), text).unwrap();
        }
    }
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_flowinit"));
    cmd.arg("check").arg("--units").arg(&units).env_clear().env("PATH", "/usr/bin:/bin");
    if let Some(p) = profile {
        cmd.args(["--profile", p]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    // `check` only reads files and exits; no service is started to reap.
    #[allow(clippy::disallowed_methods)]
    let out = cmd.output().unwrap();
    std::fs::remove_dir_all(&tmp).unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn production_never_falls_back_to_a_default_database_host_or_password() {
    // No default in any unit: `${DATABASE_PASSWORD:-flowise}` would start
    // a production container against a known password.
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("units")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for var in ["DATABASE_HOST", "DATABASE_PASSWORD"] {
            assert!(!text.contains(&format!("${{{var}:-")), "{}: a default for {var}", path.display());
        }
    }
    let required = |var: &str| format!("unit flowise: variable ${{{var}}} is required (not set or empty)");
    // Unset, and set but empty (an ECS secret that resolved to ""): both refused.
    for env in [&[][..], &[("DATABASE_HOST", ""), ("DATABASE_PASSWORD", "")][..]] {
        let (code, err) = check_shipped_units(env, None);
        assert_eq!(code, 1, "{err}");
        for var in ["DATABASE_HOST", "DATABASE_PASSWORD"] {
            assert!(err.contains(&required(var)), "{var} not named:\n{err}");
        }
    }
    // Given both, nothing about the database is left (whatever else this
    // machine lacks: the image's node and Postgres paths).
    let (_, err) = check_shipped_units(&[("DATABASE_HOST", "db.example"), ("DATABASE_PASSWORD", "s3cret")], None);
    assert!(!err.contains("DATABASE_"), "{err}");
    // The dev profile's postgres-setup needs the password too; the dev
    // image's ENV gives both (the Dockerfile's dev stage).
    let (_, err) = check_shipped_units(&[("DATABASE_HOST", "127.0.0.1")], Some("dev"));
    assert!(err.contains("unit postgres-setup: variable ${DATABASE_PASSWORD} is required"), "{err}");
    let dockerfile = read("Dockerfile");
    let dev = &dockerfile[dockerfile.find("AS dev").unwrap()..dockerfile.find("AS prod").unwrap()];
    let prod = &dockerfile[dockerfile.find("AS prod").unwrap()..];
    assert!(dev.contains("DATABASE_HOST=127.0.0.1") && dev.contains("DATABASE_PASSWORD="), "dev stage sets both");
    assert!(!prod.contains("ENV DATABASE_"), "the prod stage keeps no database value");
}

/// The roles of one image: `queue` (main in queue mode) and `worker` (the
/// worker only) both need REDIS_URL, named by the units that read it; the
/// worker role runs no router, UI, core or seed-admin.
#[test]
fn queue_and_worker_roles_need_redis_url_and_split_the_units() {
    let db = [("DATABASE_HOST", "db.example"), ("DATABASE_PASSWORD", "s3cret")];
    let required = |unit: &str| format!("unit {unit}: variable ${{REDIS_URL}} is required (not set or empty)");
    let (code, err) = check_shipped_units(&db, Some("queue"));
    assert_eq!(code, 1, "{err}");
    for unit in ["flowise", "redis-check"] {
        assert!(err.contains(&required(unit)), "queue: {unit} does not name REDIS_URL:\n{err}");
    }
    assert!(!err.contains(&required("flowise-worker")), "the worker is off in the queue role:\n{err}");
    let (code, err) = check_shipped_units(&db, Some("worker"));
    assert_eq!(code, 1, "{err}");
    for unit in ["flowise-worker", "redis-check"] {
        assert!(err.contains(&required(unit)), "worker: {unit} does not name REDIS_URL:\n{err}");
    }
    // Without a profile (prod) and in dev, nobody asks for Redis.
    for profile in [None, Some("dev")] {
        let (_, err) = check_shipped_units(&db, profile);
        assert!(!err.contains("REDIS_URL"), "{profile:?}:\n{err}");
    }
    // Which units each role runs: `check` prints nothing per unit, so read
    // the profiles the files declare, through the same rule flowinit uses.
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("units");
    let on_in = |active: &[&str]| {
        let mut on = Vec::new();
        for entry in std::fs::read_dir(&units).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let unit: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let profiles: Vec<String> = unit
                .get("unit")
                .and_then(|u| u.get("profiles"))
                .and_then(|p| p.as_array())
                .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            let active: Vec<String> = active.iter().map(|s| s.to_string()).collect();
            if flowinit::config::unit::profiles_allow(&profiles, &active) {
                on.push(path.file_stem().unwrap().to_string_lossy().into_owned());
            }
        }
        on.sort();
        on
    };
    assert_eq!(on_in(&["worker"]), ["data-dirs", "db-migrate", "flowise-worker", "redis-check"]);
    assert_eq!(
        on_in(&["queue"]),
        ["data-dirs", "db-migrate", "flowise", "flowise-ui", "redis-check", "router", "seed-admin"]
    );
    assert_eq!(on_in(&[]), ["data-dirs", "db-migrate", "flowise", "flowise-ui", "router", "seed-admin"]);
    assert_eq!(
        on_in(&["dev", "redis", "queue"]),
        [
            "data-dirs",
            "db-migrate",
            "flowise",
            "flowise-ui",
            "postgres",
            "postgres-setup",
            "redis",
            "redis-check",
            "router",
            "seed-admin"
        ]
    );
}
