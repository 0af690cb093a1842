#if os(Linux)
import Glibc
import Hyper

/// Finds and removes what process sandboxes of crashed hyperctl processes left behind: their cgroups (after
/// killing any process still in them) and their egress proxies' folders. Every such object is named
/// `sandbox-PID-N` after the hyperctl process that made it, so one whose PID no longer runs belongs to nobody.
/// A live PID (even a reused one) keeps its objects: sweeping errs on the side of leaving things.
enum LeftoverSweep {
    /// Removes every leftover under the given roots; returns the paths removed.
    @discardableResult
    static func run(cgroupRoot: String = "/sys/fs/cgroup", temporaryRoot: String = "/tmp") -> [String] {
        var removed: [String] = []
        for entry in HostSystem.directoryNames(temporaryRoot) where entry.hasPrefix("hyperctl-egress-") {
            guard let owner = ownerPid(entry.dropFirst("hyperctl-egress-".count)), !isRunning(owner) else { continue }
            let folder = temporaryRoot + "/" + entry
            HostSystem.removeQuietly(folder + "/egress.sock")
            HostSystem.removeTree(folder)
            removed.append(folder)
        }
        var cgroups: [String] = []
        for entry in HostSystem.directoryNames(cgroupRoot + "/hyperctl") where ownerPid(Substring(entry)).map({ !isRunning($0) }) == true {
            cgroups.append(cgroupRoot + "/hyperctl/" + entry)
        }
        for controller in HostSystem.directoryNames(cgroupRoot) {
            for entry in HostSystem.directoryNames(cgroupRoot + "/" + controller) where entry.hasPrefix("hyperctl-sandbox-") {
                guard let owner = ownerPid(entry.dropFirst("hyperctl-".count)), !isRunning(owner) else { continue }
                cgroups.append(cgroupRoot + "/" + controller + "/" + entry)
            }
        }
        for cgroup in cgroups where removeCgroup(cgroup) { removed.append(cgroup) }
        return removed
    }

    /// The PID in `sandbox-PID-N`.
    static func ownerPid(_ name: Substring) -> Int32? {
        let parts = name.split(separator: "-")
        guard parts.count == 3, parts[0] == "sandbox", UInt64(parts[2]) != nil else { return nil }
        return Int32(parts[1])
    }

    static func isRunning(_ pid: Int32) -> Bool { HostSystem.processStartTicks(pid) != nil }

    /// Kills what is still in a cgroup and removes it.
    static func removeCgroup(_ path: String) -> Bool {
        if (try? HostSystem.writeExisting(path + "/cgroup.kill", "1")) == nil {
            for pid in (HostSystem.readText(path + "/cgroup.procs") ?? "").split(separator: "\n").compactMap({ Int32($0) }) {
                HostSystem.sendSignal(SIGKILL, to: pid)
            }
        }
        for _ in 0..<200 {
            let failure = HostSystem.removeDirectory(path)
            if failure == nil || failure == ENOENT { return true }
            guard failure == EBUSY else { return false }
            HostSystem.sleep(milliseconds: 10)
        }
        return false
    }
}
#endif
