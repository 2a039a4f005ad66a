// Records of Nexmark people and auctions carry several short strings; mimalloc makes
// those allocations markedly cheaper than the system allocator on the hot path.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice_runtime::cli::main()
}
