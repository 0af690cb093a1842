import Testing
@testable import Hyper

@Suite("JSON")
struct JSONTests {
    @Test func roundTripKeepsKeyOrderAndEscapes() throws {
        let text = #"{"b": 1, "a": [true, false, null, "x\n\"y\"\u00e9"], "c": {"d": -2.5}}"#
        let value = try JSONValue.parse(text)
        #expect(value.compactText == #"{"b":1,"a":[true,false,null,"x\n\"y\"é"],"c":{"d":-2.5}}"#)
        #expect(try JSONValue.parse(value.formatted()) == value)
    }

    @Test func surrogatePairsDecode() throws {
        #expect(try JSONValue.parse(#""\ud83d\ude00""#) == .string("😀"))
    }

    @Test(arguments: [
        (#"{"a": 1,}"#, "expected a quoted key"),
        (#"{"a": 1, "a": 2}"#, "duplicate key \"a\""),
        ("[1 2]", "expected ',' or ']'"),
        (#""abc"#, "unterminated string"),
        ("01x", "unexpected data"),
        ("{} {}", "unexpected data"),
        ("tru", "invalid literal"),
        (String(repeating: "[", count: 100), "nesting is deeper"),
        ("", "unexpected end of input"),
        (#""\ud800""#, "unpaired surrogate"),
    ])
    func rejectsMalformedInput(text: String, reason: String) {
        #expect {
            try JSONValue.parse(text)
        } throws: { error in
            (error as? JSONSyntaxError)?.reason.contains(reason) == true
        }
    }

    @Test func errorsCarryLineAndColumn() {
        do {
            _ = try JSONValue.parse("{\n  \"a\": x\n}")
            Issue.record("parse should have failed")
        } catch {
            #expect(error.line == 2)
            #expect(error.column == 8)
        }
    }

    @Test func controlCharactersAreEscapedWhenPrinting() {
        #expect(JSONValue.string("\u{01}").compactText == #""\u0001""#)
    }
}
