import CHyperHost
#if canImport(Glibc)
import Glibc
#endif

/// hyperctl's own INT, TERM, HUP, QUIT, USR1, USR2, WINCH, CONT and TSTP, taken from a signalfd instead of
/// their default actions, for relaying to a sandboxed command. Create it before starting other threads:
/// they inherit the blocked mask.
public final class HostSignalRelay: SignalRelay {
    public let descriptor: Int32

    /// Blocks the relayed signals in this thread and opens the signalfd.
    public init() throws(HyperError) {
        let fd = chyper_relay_signal_fd()
        guard fd >= 0 else { throw HyperError(.hostFailure, "signalfd: \(HostSystem.errorText(errno))") }
        descriptor = fd
    }

    deinit { HostSystem.closeDescriptor(descriptor) }

    public func take() -> [Int32] {
        var signals: [Int32] = []
        while case let number = chyper_next_relayed_signal(descriptor), number > 0 { signals.append(number) }
        return signals
    }
}
