//! The load for `scripts/bench-wecom-wrk.sh`: WeCom callback throughput of a real
//! `kefu serve` measured with wrk, as the durability issue's baseline was (loopback, 32
//! connections).
//!
//! ```text
//! cargo run --release --example wecom_load -- DIR PORT COUNT USERS
//! ```
//!
//! It starts a fake WeCom API (the tests' one) on 127.0.0.1:0, writes `DIR/kefu.toml` (the
//! bundled knowledge and the tests' WeCom config: the official sample corp's credentials, the
//! fake as `api_base`; kefu on 127.0.0.1:PORT, data under `DIR/data`) and
//! `DIR/callbacks.tsv`: COUNT signed, encrypted text callbacks, one per line as
//! `path?query<TAB>body`, each with its own MsgId, spread over USERS customers (so
//! per-conversation queues measure nothing but what a real spread of customers costs). Then
//! it prints `ready` and serves the fake until it is killed; kefu's replies go to it.
//!
//! Callbacks are signed with the current time, so run wrk within kefu's
//! `timestamp_window_ms` of writing them.

use std::io::Write;

#[path = "../tests/common/fake_wecom.rs"]
mod fake_wecom;
#[path = "../tests/common/wecom_kefu.rs"]
mod wecom_kefu;

use wecom_kefu::{Sealer, AGENT_ID, APP_SECRET, CHANNEL, ROBOT_KEY};

const QUESTIONS: [&str; 4] = [
    "How do I reset my password?",
    "What is the refund policy?",
    "can I get my money back",
    "退款多久到账",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, port, count, users] = args.as_slice() else {
        eprintln!("usage: wecom_load DIR PORT COUNT USERS");
        std::process::exit(2);
    };
    let dir = std::path::PathBuf::from(dir);
    let count: u64 = count.parse().expect("COUNT is a number");
    let users: u64 = users.parse().expect("USERS is a number");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let seal = Sealer::official();
    let fake = rt.block_on(fake_wecom::FakeWeCom::start(
        &seal.corp_id,
        APP_SECRET,
        AGENT_ID,
        ROBOT_KEY,
    ));
    let knowledge = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("knowledge");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = {data:?}\n{}",
        wecom_kefu::config_toml(&knowledge, &fake.base),
        data = dir.join("data").display().to_string(),
    );
    std::fs::write(dir.join("kefu.toml"), config).expect("write kefu.toml");
    let file = std::fs::File::create(dir.join("callbacks.tsv")).expect("callbacks.tsv");
    let mut out = std::io::BufWriter::new(file);
    for id in 1..=count {
        let user = format!("user{}", id % users);
        let cb = seal.text(&user, id, QUESTIONS[(id % 4) as usize]);
        writeln!(out, "/wecom/{CHANNEL}?{}\t{}", cb.query, cb.body).expect("write callback");
    }
    out.flush().expect("flush callbacks");
    println!("ready");
    rt.block_on(std::future::pending::<()>());
}
