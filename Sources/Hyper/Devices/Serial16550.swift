/// A 16550A UART, as COM1 (ports 0x3F8-0x3FF, IRQ 4): enough for a Linux console and early printk.
///
/// Transmitted bytes go to `output`; the receiver is always empty. Register values after reset follow the
/// 16550A data sheet: the line status register reads 0x60 (transmitter empty), the interrupt identification
/// register reads 0x01 (no interrupt pending).
public final class Serial16550: BusDevice {
    /// Where transmitted bytes go.
    public let output: @Sendable ([UInt8]) -> Void
    /// Raises or lowers the UART's interrupt line.
    public var interrupt: ((Bool) -> Void)?

    /// The device's state as plain values, for snapshots.
    public struct State: Equatable, Sendable {
        public var interruptEnable: UInt8 = 0
        public var lineControl: UInt8 = 0
        public var modemControl: UInt8 = 0
        public var scratch: UInt8 = 0
        public var divisor: UInt16 = 12  // 9600 baud
        public var fifoControl: UInt8 = 0
        /// A transmitter-empty interrupt is pending.
        public var transmitInterruptPending = false
    }

    public private(set) var state = State()
    private var pending: [UInt8] = []

    public static let lineStatusTransmitterEmpty: UInt8 = 0x60
    private static let dlab: UInt8 = 0x80
    private static let enableTransmitInterrupt: UInt8 = 0x02

    /// Creates a UART that hands transmitted bytes to `output`.
    public init(output: @escaping @Sendable ([UInt8]) -> Void) { self.output = output }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        let divisorLatch = state.lineControl & Self.dlab != 0
        switch offset {
        case 0: return divisorLatch ? UInt64(state.divisor & 0xFF) : 0  // Receive buffer: always empty.
        case 1: return divisorLatch ? UInt64(state.divisor >> 8) : UInt64(state.interruptEnable)
        case 2:
            // Interrupt identification; reading it clears a pending transmitter-empty interrupt.
            let fifo: UInt8 = state.fifoControl & 0x01 != 0 ? 0xC0 : 0
            if state.transmitInterruptPending {
                state.transmitInterruptPending = false
                updateInterrupt()
                return UInt64(fifo | 0x02)
            }
            return UInt64(fifo | 0x01)
        case 3: return UInt64(state.lineControl)
        case 4: return UInt64(state.modemControl)
        case 5: return UInt64(Self.lineStatusTransmitterEmpty)
        case 6: return state.modemControl & 0x10 != 0 ? 0xF0 : 0xB0  // Loopback, else CTS+DSR+DCD asserted.
        case 7: return UInt64(state.scratch)
        default: return 0xFF
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        let byte = UInt8(truncatingIfNeeded: value)
        let divisorLatch = state.lineControl & Self.dlab != 0
        switch offset {
        case 0:
            if divisorLatch {
                state.divisor = state.divisor & 0xFF00 | UInt16(byte)
            } else {
                pending.append(byte)
                if byte == UInt8(ascii: "\n") || pending.count >= 256 { flush() }
                state.transmitInterruptPending = state.interruptEnable & Self.enableTransmitInterrupt != 0
                updateInterrupt()
            }
        case 1:
            if divisorLatch {
                state.divisor = state.divisor & 0x00FF | UInt16(byte) << 8
            } else {
                let enabling = byte & Self.enableTransmitInterrupt != 0 && state.interruptEnable & Self.enableTransmitInterrupt == 0
                state.interruptEnable = byte & 0x0F
                if enabling { state.transmitInterruptPending = true }  // The transmitter is already empty.
                updateInterrupt()
            }
        case 2: state.fifoControl = byte
        case 3: state.lineControl = byte
        case 4: state.modemControl = byte & 0x1F
        case 7: state.scratch = byte
        default: break
        }
    }

    /// Hands buffered output to the sink (the console writes whole lines where it can).
    /// Puts a saved state back (a restored snapshot's).
    public func restore(_ saved: State) {
        state = saved
        updateInterrupt()
    }

    public func flush() {
        guard !pending.isEmpty else { return }
        output(pending)
        pending.removeAll(keepingCapacity: true)
    }

    private func updateInterrupt() {
        interrupt?(state.transmitInterruptPending)
    }
}
