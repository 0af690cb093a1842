/// A device on the port-IO or MMIO bus. Offsets are relative to the device's base; sizes are 1, 2, 4 or 8.
public protocol BusDevice: AnyObject {
    /// Returns the value the guest reads.
    func read(offset: UInt64, size: Int) -> UInt64
    /// Takes a value the guest writes.
    func write(offset: UInt64, size: Int, value: UInt64)
}

/// The guest's port-IO and MMIO address spaces: ranges mapped to devices.
///
/// An access that no device claims reads all ones (ports float high) and is ignored on write. A device can
/// ask the machine to stop (a reset through the i8042, for example); the vCPU loop checks after each access.
public final class MachineBus {
    private struct Mapping {
        let base: UInt64
        let length: UInt64
        let device: any BusDevice
    }

    private var ports: [Mapping] = []
    private var mmio: [Mapping] = []
    /// Set by a device to end the run with this exit.
    public var requestedExit: VMExit?

    /// Creates an empty bus.
    public init() {}

    /// Maps `device` at ports `base ..< base + length`.
    public func mapPorts(_ base: UInt16, length: UInt16, to device: any BusDevice) throws(HyperError) {
        try insert(Mapping(base: UInt64(base), length: UInt64(length), device: device), into: &ports, space: "port")
    }

    /// Maps `device` at guest-physical `base ..< base + length`.
    public func mapMemory(_ base: UInt64, length: UInt64, to device: any BusDevice) throws(HyperError) {
        try insert(Mapping(base: base, length: length, device: device), into: &mmio, space: "MMIO")
    }

    private func insert(_ mapping: Mapping, into list: inout [Mapping], space: String) throws(HyperError) {
        let (end, overflow) = mapping.base.addingReportingOverflow(mapping.length)
        guard mapping.length > 0, !overflow else { throw HyperError(.invalidArgument, "\(space) range at \(mapping.base) is empty or wraps") }
        if list.contains(where: { $0.base < end && mapping.base < $0.base + $0.length }) {
            throw HyperError(.invalidArgument, "\(space) range 0x\(String(mapping.base, radix: 16)) overlaps a mapped device")
        }
        list.append(mapping)
    }

    private func find(_ address: UInt64, size: Int, in list: [Mapping]) -> (Mapping, UInt64)? {
        guard [1, 2, 4, 8].contains(size) else { return nil }
        for mapping in list where address >= mapping.base && address - mapping.base < mapping.length {
            let offset = address - mapping.base
            guard offset + UInt64(size) <= mapping.length else { return nil }  // Straddles the end: unclaimed.
            return (mapping, offset)
        }
        return nil
    }

    static func allOnes(_ size: Int) -> UInt64 { size >= 8 ? .max : (UInt64(1) << UInt64(size * 8)) - 1 }

    /// Dispatches a port read.
    public func readPort(_ port: UInt16, size: Int) -> UInt64 {
        guard let (mapping, offset) = find(UInt64(port), size: size, in: ports) else { return Self.allOnes(size) }
        return mapping.device.read(offset: offset, size: size) & Self.allOnes(size)
    }

    /// Dispatches a port write.
    public func writePort(_ port: UInt16, size: Int, value: UInt64) {
        find(UInt64(port), size: size, in: ports).map { $0.0.device.write(offset: $0.1, size: size, value: value & Self.allOnes(size)) }
    }

    /// Dispatches an MMIO read.
    public func readMemory(_ address: UInt64, size: Int) -> UInt64 {
        guard let (mapping, offset) = find(address, size: size, in: mmio) else { return Self.allOnes(size) }
        return mapping.device.read(offset: offset, size: size) & Self.allOnes(size)
    }

    /// Dispatches an MMIO write.
    public func writeMemory(_ address: UInt64, size: Int, value: UInt64) {
        find(address, size: size, in: mmio).map { $0.0.device.write(offset: $0.1, size: size, value: value & Self.allOnes(size)) }
    }
}
