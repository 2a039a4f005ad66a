// Session state and click records carry short strings; mimalloc makes those allocations
// cheaper than the system allocator, as in the stock `sluice` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let mut registry = sluice_runtime::jobs::JobRegistry::new();
    sluice_example_sessions::register(&mut registry);
    sluice_runtime::cli::main_with(registry)
}
