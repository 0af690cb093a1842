/// A minimal i8042 keyboard controller (ports 0x60 and 0x64): enough for a guest to reset the machine by
/// writing 0xFE to port 0x64, and for Linux's probe to find no keyboard.
public final class I8042: BusDevice {
    /// Called when the guest pulses the reset line.
    public var onReset: (() -> Void)?
    /// The last command byte written to port 0x64 that expects a data byte, and the controller's command byte.
    public private(set) var commandByte: UInt8 = 0x00
    private var expectingData: UInt8?

    /// Port offsets inside the 0x60-0x64 window.
    public static let dataOffset: UInt64 = 0
    public static let commandOffset: UInt64 = 4
    static let resetCommand: UInt8 = 0xFE

    /// Creates the controller.
    public init() {}

    public func read(offset: UInt64, size: Int) -> UInt64 {
        switch offset {
        case Self.dataOffset: return UInt64(commandByte)
        case Self.commandOffset: return 0x00  // Status: output buffer empty, input buffer empty.
        default: return 0xFF
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        let byte = UInt8(truncatingIfNeeded: value)
        switch offset {
        case Self.commandOffset:
            switch byte {
            case Self.resetCommand: onReset?()
            case 0x60: expectingData = byte  // Write command byte: the next data byte.
            default: break
            }
        case Self.dataOffset:
            if expectingData == 0x60 { commandByte = byte }
            expectingData = nil
        default:
            break
        }
    }
}
