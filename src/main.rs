fn main() -> std::process::ExitCode {
    learner_sync::cli::run()
}
