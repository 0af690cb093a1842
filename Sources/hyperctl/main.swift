#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Hyper

let context = CommandContext(
    registry: BackendCatalog.makeRegistry(),
    streams: .inherited,
    currentDirectory: (try? HostSystem.currentDirectory()) ?? "/")
exit(HyperCtl.main(arguments: Array(CommandLine.arguments.dropFirst()), context: context))
