//! `cvnotify setup` and the Custom Vision part of `cvnotify check`, run as
//! the real binary against real Azurite (queue and blob services) and the
//! loopback stand-in for the Custom Vision Training API
//! (`common::customvision`, written from the reference: no real Custom
//! Vision service is reachable here).

use crate::common;

use common::customvision::{CustomVision, CvOptions, Forms};
use common::*;
use uuid::Uuid;

/// Queue and blob Azurite, a container, and the stand-in.
struct Bed {
    w: World,
    _blobs: Azurite,
    container: String,
    cv: CustomVision,
}

impl Bed {
    async fn start(options: CvOptions) -> Self {
        let w = World::new().await;
        let blobs = Azurite::builder(Service::Blob).start().await;
        let endpoint = format!("http://127.0.0.1:{}/devstoreaccount1", blobs.port);
        let container = create_container(&endpoint, "models").await;
        let cv = CustomVision::start(options).await;
        Bed {
            w,
            _blobs: blobs,
            container,
            cv,
        }
    }

    fn queue_url(&self) -> String {
        format!("{}/{}", self.w.azurite.queue_endpoint(), self.w.queue)
    }

    /// The world's config with `[customvision]` (`section`) and a download
    /// handler naming the container.
    fn config(&self, section: &str) -> std::path::PathBuf {
        self.w
            .config()
            .extra(section)
            .handler(format!(
                "[[handlers]]\ntype = \"download\"\ndir = \"{}\"\nallowed_hosts = [\"127.0.0.1:{}\"]\ncontainer = \"{}\"\n",
                self.w.path("models").display(),
                self._blobs.port,
                self.container
            ))
            .write("c.toml")
    }
}

/// Runs the binary off the runtime's threads (the stand-in serves on them).
async fn run(config: &std::path::Path, args: &[&str]) -> Ran {
    run_cli(config, args, &[]).await
}

/// Adds the project `birds` to the stand-in service and runs `cvnotify
/// setup --project <it>` with `args` against it; the project and the run.
async fn setup_birds(b: &Bed, args: &[&str]) -> (Uuid, Ran) {
    let project = b.cv.add_project("birds");
    let cfg = b.config(&b.cv.section(""));
    let id = project.to_string();
    let args: Vec<&str> = ["setup", "--project", &id]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    (project, run(&cfg, &args).await)
}

/// The line of step `name` (`ok    project ...`, `FAIL  message ...`).
fn step<'a>(lines: &'a [String], name: &str) -> &'a str {
    lines
        .iter()
        .find(|l| {
            l.get(6..)
                .is_some_and(|rest| rest.starts_with(&format!("{name} ")))
        })
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no `{name}` line in {lines:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_sets_the_storage_uris_reads_them_back_and_sees_the_connection_test() {
    let b = Bed::start(CvOptions::default()).await;
    let (project, out) = setup_birds(&b, &["--wait", "60s"]).await;
    out.assert_success();
    let lines = out.lines();
    assert!(
        step(&lines, "project").starts_with("ok    project    `birds`"),
        "{lines:#?}"
    );
    assert!(
        step(&lines, "settings").contains("set with UpdateProject with the URIs in `settings` (the storage guide's form); GetProject shows both"),
        "{lines:#?}"
    );
    assert!(
        step(&lines, "message").starts_with(&format!(
            "ok    message    ConnectionTest for project {project} arrived"
        )),
        "{lines:#?}"
    );
    assert!(
        step(&lines, "blob")
            .starts_with("ok    blob       test blob `CustomVision-TestPermission/"),
        "{lines:#?}"
    );
    // The values the service holds now.
    let settings = &b.cv.project(project)["settings"];
    assert_eq!(
        settings["notificationQueueUri"],
        b.queue_url().as_str(),
        "{settings}"
    );
    assert_eq!(
        settings["exportModelContainerUri"],
        b.container.as_str(),
        "{settings}"
    );
    // The rest of the project went back as it was read.
    assert_eq!(settings["classificationType"], "Multiclass", "{settings}");
    let updates = b.cv.count("PATCH", &format!("/projects/{project}"));
    assert_eq!(updates, 1, "{:?}", b.cv.requests());
    // Setup only looks: the ConnectionTest is left for the daemon.
    let left = World::peek_all(&b.w.main_queue()).await;
    assert_eq!(left.len(), 1, "the queue holds {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_with_a_wrong_training_key_says_which_key_to_use_and_fails() {
    let b = Bed::start(CvOptions::default()).await;
    let project = b.cv.add_project("birds");
    let section = format!(
        "\n[customvision]\nendpoint = \"{}\"\ntraining_key = \"wrong-key-5f2b9c\"\n",
        b.cv.endpoint()
    );
    let cfg = b.config(&section);
    let out = run(
        &cfg,
        &["setup", "--project", &project.to_string(), "--wait", "5s"],
    )
    .await;
    out.assert_code(1);
    let lines = out.lines();
    let l = step(&lines, "project");
    assert!(l.starts_with(&format!("FAIL  project    reading project {project}: GetProject: the service refused the credential (401")), "{l}");
    assert!(
        l.contains(
            "check customvision.training_key: it must be KEY 1 or KEY 2 of the *training* resource"
        ),
        "{l}"
    );
    out.assert_hides("wrong-key-5f2b9c");
    // Nothing was changed, nothing waited for.
    assert!(
        !lines
            .iter()
            .any(|l| l.contains(" settings ") || l.contains(" message ")),
        "{lines:#?}"
    );
    let settings = &b.cv.project(project)["settings"];
    assert!(settings.get("notificationQueueUri").is_none(), "{settings}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_names_the_role_and_the_command_when_the_service_never_writes() {
    let b = Bed::start(CvOptions {
        storage_roles: false,
        ..Default::default()
    })
    .await;
    let (project, out) = setup_birds(&b, &["--wait", "3s"]).await;
    out.assert_code(1);
    let lines = out.lines();
    // The service took the settings...
    assert!(step(&lines, "settings").starts_with("ok"), "{lines:#?}");
    // ...but nothing arrived: the role, where, and the command.
    let m = step(&lines, "message");
    assert!(
        m.starts_with(&format!(
            "FAIL  message    no ConnectionTest for project {project} in `{}`",
            b.w.queue
        )),
        "{m}"
    );
    let all = lines.join("\n");
    for expected in [
        "needs 'Storage Queue Data Contributor' there",
        "az cognitiveservices account identity assign --name <custom-vision-resource>",
        "az role assignment create --role \"Storage Queue Data Contributor\" --assignee-principal-type ServicePrincipal",
        &format!("/queueServices/default/queues/{}\"", b.w.queue),
        "Or a cvnotify daemon already running on this queue received and deleted it",
        "needs 'Storage Blob Data Contributor' there",
        "az role assignment create --role \"Storage Blob Data Contributor\"",
        "/blobServices/default/containers/models\"",
    ] {
        assert!(all.contains(expected), "missing `{expected}` in\n{all}");
    }
    assert!(
        step(&lines, "blob")
            .starts_with("FAIL  blob       no blob under CustomVision-TestPermission/"),
        "{all}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_dry_run_shows_the_change_and_changes_nothing() {
    let b = Bed::start(CvOptions::default()).await;
    let project = b.cv.add_project("birds");
    let before = b.cv.project(project);
    let cfg = b.config(&b.cv.section(""));
    let out = run(
        &cfg,
        &["setup", "--project", &project.to_string(), "--dry-run"],
    )
    .await;
    out.assert_success();
    let lines = out.lines();
    let l = step(&lines, "settings");
    assert_eq!(
        l,
        format!(
            "ok    settings   dry run: would set notificationQueueUri: (not set) → {}; exportModelContainerUri: (not set) → {}; nothing changed",
            b.queue_url(),
            b.container
        ),
        "the settings line"
    );
    assert!(step(&lines, "queue").contains("dry run: `"), "{lines:#?}");
    assert_eq!(b.cv.project(project), before, "the project changed");
    assert!(
        b.cv.requests().iter().all(|r| r.method == "GET"),
        "{:?}",
        b.cv.requests()
    );
    // Not even the queue was created.
    let peeked = b.w.main_queue().peek(1).await;
    assert!(
        matches!(peeked, Err(QueueError::QueueNotFound { .. })),
        "{peeked:?}"
    );
    let blobs = list_blobs(&b.container, "").await;
    assert!(blobs.is_empty(), "{blobs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_tries_the_other_form_when_the_first_does_not_stick_and_says_which_worked() {
    let b = Bed::start(CvOptions {
        forms: Forms {
            update_body: false,
            update_query: true,
            create_query: false,
            create_body: false,
        },
        ..Default::default()
    })
    .await;
    let project = b.cv.add_project("birds");
    let cfg = b.config(&b.cv.section(""));
    let out = run(
        &cfg,
        &[
            "setup",
            "--project",
            &project.to_string(),
            "--no-backup",
            "--wait",
            "60s",
        ],
    )
    .await;
    out.assert_success();
    let lines = out.lines();
    assert_eq!(
        step(&lines, "settings"),
        "ok    settings   set with UpdateProject with the URIs as query parameters (the guide's CreateProject form; not documented for UpdateProject); GetProject shows both; did not stick: UpdateProject with the URIs in `settings` (the storage guide's form)",
        "the settings line"
    );
    assert!(step(&lines, "message").starts_with("ok"), "{lines:#?}");
    assert!(
        !lines.iter().any(|l| l.contains(" blob ")),
        "--no-backup: {lines:#?}"
    );
    let settings = &b.cv.project(project)["settings"];
    assert!(
        settings.get("exportModelContainerUri").is_none(),
        "{settings}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_fails_with_what_it_saw_when_no_form_sticks() {
    let b = Bed::start(CvOptions {
        forms: Forms {
            update_body: false,
            update_query: false,
            create_query: false,
            create_body: false,
        },
        ..Default::default()
    })
    .await;
    let (_, out) = setup_birds(&b, &["--wait", "5s"]).await;
    out.assert_code(1);
    let lines = out.lines();
    let l = step(&lines, "settings");
    assert!(
        l.starts_with(
            "FAIL  settings   the service accepted every form but the values did not stick"
        ),
        "{l}"
    );
    assert!(
        l.contains(
            "GetProject shows notificationQueueUri = (not set), exportModelContainerUri = (not set)"
        ),
        "{l}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_create_makes_a_project_wired_to_the_queue() {
    let b = Bed::start(CvOptions::default()).await;
    let cfg = b.config(&b.cv.section(""));
    let out = run(&cfg, &["setup", "--create", "new birds", "--wait", "60s"]).await;
    out.assert_success();
    let lines = out.lines();
    assert!(
        step(&lines, "project").starts_with("ok    project    created `new birds` ("),
        "{lines:#?}"
    );
    assert_eq!(
        step(&lines, "settings"),
        "ok    settings   set by CreateProject with the URIs as query parameters (the storage guide's form); GetProject shows both",
        "the settings line"
    );
    assert!(step(&lines, "message").starts_with("ok"), "{lines:#?}");
    assert!(step(&lines, "blob").starts_with("ok"), "{lines:#?}");
    let create =
        b.cv.requests()
            .into_iter()
            .find(|r| r.method == "POST")
            .unwrap();
    assert!(
        create
            .query
            .contains(&("notificationQueueUri".into(), b.queue_url())),
        "{create:?}"
    );
    assert_eq!(b.cv.count("PATCH", ""), 0, "{:?}", b.cv.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_verifies_each_listed_project_points_at_this_queue() {
    let b = Bed::start(CvOptions::default()).await;
    let wired = b.cv.add_project("wired");
    let elsewhere = b.cv.add_project("elsewhere");
    let missing = Uuid::new_v4();
    b.cv.set_storage(wired, &b.queue_url(), Some(&b.container));
    b.cv.set_storage(
        elsewhere,
        "https://other.queue.core.windows.net/other-queue",
        None,
    );
    b.w.main_queue().create_if_missing().await.unwrap();
    let cfg = b.config(&b.cv.section(&format!(
        "projects = [\"{wired}\", \"{elsewhere}\", \"{missing}\"]"
    )));
    let out = run(&cfg, &["check"]).await;
    out.assert_code(1);
    let lines = out.lines();
    let projects: Vec<&String> = lines
        .iter()
        .filter(|l| l[6..].starts_with("project "))
        .collect();
    assert_eq!(projects.len(), 3, "{lines:#?}");
    assert_eq!(
        projects[0],
        &format!(
            "ok    project    {wired} `wired`: notifications → this queue; backups → {}",
            b.container
        ),
        "the wired project's line"
    );
    assert!(projects[1].starts_with(&format!("FAIL  project    {elsewhere} `elsewhere`: notificationQueueUri is https://other.queue.core.windows.net/other-queue, not this daemon's queue {}", b.queue_url())), "{}", projects[1]);
    assert!(
        projects[1].contains("exportModelContainerUri is not set"),
        "{}",
        projects[1]
    );
    assert!(
        projects[1].ends_with(&format!("run `cvnotify setup --project {elsewhere}`")),
        "{}",
        projects[1]
    );
    assert!(
        projects[2].starts_with(&format!(
            "FAIL  project    {missing}: GetProject: the service answered 404 NotFoundProject"
        )),
        "{}",
        projects[2]
    );
    // The storage checks ran as before.
    assert!(
        lines.iter().any(|l| l.starts_with("ok    receive")),
        "{lines:#?}"
    );
}
