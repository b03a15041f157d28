// The migrations are embedded by `sqlx::migrate!`, which does not tell cargo about a new
// file in migrations/: without this a build could miss one (what `sqlx migrate
// build-script` writes).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
