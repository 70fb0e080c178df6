fn main() -> std::process::ExitCode {
    learner_sync::commands::main()
}
