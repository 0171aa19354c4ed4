import HalleyProtocol
import Testing

@testable import HalleyEndpoints

/// The members an `events` body is read by (one pass, six keys) against `JSONFields` (the
/// member list it replaced): the same answer for every key asked, on every sample.
@Suite struct EventMembersTests {
    static let samples: [String] = [
        #"{"name":"e","channel":"c","data":"d"}"#,
        #"{"name":"e","channels":["a","b"],"data":{"x":[1,2]},"socket_id":"1.2","info":"user_count"}"#,
        #"{"name":"first","name":"last","data":"1","data":"2"}"#,
        #"{"na\u006de":"escaped key","d\u0061ta":"x","channel":"c"}"#,
        #"{"Name":"other case","NAME":"x","name":"n","other":7}"#,
        #"{"\u212Ae":"kelvin","name":"é","data":"ü"}"#,
        #"{}"#, #"[]"#, #""name""#, #"{"name":"e""#, #"{"name":"e"} x"#, #"nope"#, "",
        #"{"info":null,"socket_id":1,"channels":"c","channel":["c"]}"#,
    ]
    static let keys = ["name", "data", "channel", "channels", "socket_id", "info", "other", "Name", "missing"]

    @Test(arguments: samples)
    func agreesWithJSONFields(_ sample: String) {
        let body = Array(sample.utf8)
        let fields = try? JSONParser.parseFields(body)
        let members = HubEndpoints.EventMembers(body)
        #expect((members == nil) == (fields == nil), "\(sample)")
        guard let members, let fields else { return }
        for k in Self.keys { #expect(members[k] == fields[k], "\(sample): \(k)") }
    }
}
