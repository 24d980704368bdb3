import Foundation
import Synchronization

/// Ctrl-C during long work (generating text, writing a model file) stops that work cleanly:
/// generation ends and the command finishes normally (timings, next chat prompt); a model
/// file being written is abandoned with its temporary file removed. At any other time Ctrl-C
/// exits at once, as usual.
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

    /// Runs `body` as work that Ctrl-C may stop; `body` receives the "keep going" check.
    static func stoppable<T>(_ body: (() -> Bool) throws -> T) rethrows -> T {
        requested.store(false, ordering: .relaxed)
        generating.store(true, ordering: .relaxed)
        defer { generating.store(false, ordering: .relaxed) }
        return try body { !requested.load(ordering: .relaxed) }
    }
}
