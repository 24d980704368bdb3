import Foundation
import Synchronization

/// Ctrl-C while text is being generated stops that generation (the command then finishes
/// normally: stats, next chat prompt); Ctrl-C at any other time exits at once, as usual.
enum Interrupt {
    static let requested = Atomic<Bool>(false)
    static let generating = Atomic<Bool>(false)

    static func install() {
        signal(SIGINT) { _ in
            if Interrupt.generating.load(ordering: .relaxed) {
                Interrupt.requested.store(true, ordering: .relaxed)
            } else {
                _exit(130)
            }
        }
    }

    /// Runs `body` as a generation that Ctrl-C may stop; `body` receives the "keep going" check.
    static func generation<T>(_ body: (() -> Bool) throws -> T) rethrows -> T {
        requested.store(false, ordering: .relaxed)
        generating.store(true, ordering: .relaxed)
        defer { generating.store(false, ordering: .relaxed) }
        return try body { !requested.load(ordering: .relaxed) }
    }
}
