/// A small encoder for the ACPI Machine Language subset a microVM's DSDT needs: names, devices, strings,
/// integers and resource templates (I/O ports, IRQs, fixed memory, extended interrupts).
public enum AML {
    /// One AML term, already encoded.
    public struct Term: Equatable, Sendable {
        public var bytes: [UInt8]
    }

    /// `Scope (path) { terms }`.
    public static func scope(_ path: String, _ terms: [Term]) -> Term {
        Term(bytes: [0x10] + packageLength(nameString(path) + terms.flatMap(\.bytes)))
    }

    /// `Device (name) { terms }`.
    public static func device(_ name: String, _ terms: [Term]) -> Term {
        Term(bytes: [0x5B, 0x82] + packageLength(nameString(name) + terms.flatMap(\.bytes)))
    }

    /// `Name (name, value)`.
    public static func name(_ name: String, _ value: Term) -> Term {
        Term(bytes: [0x08] + nameString(name) + value.bytes)
    }

    /// A string constant.
    public static func string(_ text: String) -> Term { Term(bytes: [0x0D] + Array(text.utf8) + [0]) }

    /// An integer constant in the smallest encoding.
    public static func integer(_ value: UInt64) -> Term {
        switch value {
        case 0: return Term(bytes: [0x00])
        case 1: return Term(bytes: [0x01])
        case 2...0xFF: return Term(bytes: [0x0A, UInt8(value)])
        case 0x100...0xFFFF: return Term(bytes: [0x0B] + littleEndian(value, 2))
        case 0x1_0000...0xFFFF_FFFF: return Term(bytes: [0x0C] + littleEndian(value, 4))
        default: return Term(bytes: [0x0E] + littleEndian(value, 8))
        }
    }

    /// A resource template: a buffer of resource descriptors closed by an end tag with a zero checksum.
    public static func resourceTemplate(_ descriptors: [[UInt8]]) -> Term {
        let body: [UInt8] = descriptors.joined() + [0x79, 0x00]
        return Term(bytes: [0x11] + packageLength(integer(UInt64(body.count)).bytes + body))
    }

    /// An I/O port range descriptor (16-bit decode).
    public static func io(base: UInt16, length: UInt8) -> [UInt8] {
        [0x47, 0x01] + littleEndian(UInt64(base), 2) + littleEndian(UInt64(base), 2) + [0x01, length]
    }

    /// A legacy IRQ descriptor (edge-triggered, active high).
    public static func irq(_ number: UInt8) -> [UInt8] {
        let mask = UInt16(1) << UInt16(number & 15)
        return [0x22] + littleEndian(UInt64(mask), 2)
    }

    /// A fixed 32-bit memory range descriptor (read-write).
    public static func memory32Fixed(base: UInt32, length: UInt32) -> [UInt8] {
        [0x86, 0x09, 0x00, 0x01] + littleEndian(UInt64(base), 4) + littleEndian(UInt64(length), 4)
    }

    /// An extended interrupt descriptor: consumer, edge-triggered, active high, exclusive, one interrupt.
    ///
    /// Edge, because devices pulse their line once per event (an irqfd write is a rising and a falling
    /// edge). A level-triggered line pulsed while the guest still handles the previous interrupt (remote IRR
    /// set) would lose that event for good, and the guest would wait for it forever.
    public static func interrupt(_ number: UInt32) -> [UInt8] {
        let flags: UInt8 = 0x01 | 0x02  // bit 0: consumer; bit 1: edge-triggered (bit 2 clear: active high; bit 3 clear: exclusive)
        return [0x89, 0x06, 0x00, flags, 0x01] + littleEndian(UInt64(number), 4)
    }

    /// Encodes a name path of 4-character segments (`_SB_`, `COM1`, `\_SB_.V000`), padding short ones with `_`.
    static func nameString(_ path: String) -> [UInt8] {
        var bytes: [UInt8] = []
        var rest = Substring(path)
        if rest.hasPrefix("\\") {
            bytes.append(0x5C)
            rest = rest.dropFirst()
        }
        let segments = rest.split(separator: ".").map { segment -> [UInt8] in
            let raw = Array(segment.utf8.prefix(4))
            return raw + [UInt8](repeating: UInt8(ascii: "_"), count: 4 - raw.count)
        }
        switch segments.count {
        case 0: bytes.append(0x00)
        case 1: bytes += segments[0]
        case 2: bytes += [0x2E] + segments[0] + segments[1]
        default: bytes += [0x2F, UInt8(segments.count)] + segments.flatMap { $0 }
        }
        return bytes
    }

    /// Prefixes `body` with its AML package length (which counts its own bytes).
    static func packageLength(_ body: [UInt8]) -> [UInt8] {
        let total = body.count
        if total + 1 <= 0x3F { return [UInt8(total + 1)] + body }
        for extra in 1...3 {
            let length = total + 1 + extra
            if length < 1 << (4 + 8 * extra) {
                var encoded: [UInt8] = [UInt8(extra << 6) | UInt8(length & 0x0F)]
                for index in 0..<extra { encoded.append(UInt8(truncatingIfNeeded: length >> (4 + 8 * index))) }
                return encoded + body
            }
        }
        return [0] + body  // Unreachable for tables this small.
    }

    static func littleEndian(_ value: UInt64, _ count: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: value >> UInt64($0 * 8)) }
    }
}
