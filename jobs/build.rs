// The job queue's SQLite migrations are embedded by `sqlx::migrate!` at compile time; rebuild
// when one is added.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
