"""Windows command-line quoting, checked against an independent CommandLineToArgvW splitter
written from the documented rules (not from the encoder)."""

from hypothesis import given, settings, strategies as st

from nspawn.backends.hcs.cmdline import command_line, quote_argument


def split(line: str) -> list[str]:
    args: list[str] = []
    i, n = 0, len(line)
    # argv[0]: up to the first space/tab outside quotes, quotes removed, backslashes literal.
    program, quoted = [], False
    while i < n and (quoted or line[i] not in " \t"):
        if line[i] == '"':
            quoted = not quoted
        else:
            program.append(line[i])
        i += 1
    args.append("".join(program))
    while True:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            return args
        current, quoted = [], False
        while i < n and (quoted or line[i] not in " \t"):
            if line[i] == "\\":
                j = i
                while j < n and line[j] == "\\":
                    j += 1
                count = j - i
                if j < n and line[j] == '"':
                    current.append("\\" * (count // 2))
                    if count % 2:
                        current.append('"')
                        i = j + 1
                    else:
                        i = j
                else:
                    current.append("\\" * count)
                    i = j
            elif line[i] == '"':
                quoted = not quoted
                i += 1
            else:
                current.append(line[i])
                i += 1
        args.append("".join(current))


arguments = st.lists(st.text(alphabet=st.sampled_from(['a', ' ', '\t', '"', '\\', 'é', '&', 'x']), max_size=12), max_size=6)


@settings(max_examples=2000, deadline=None)
@given(arguments)
def test_round_trip(args):
    assert split(command_line(["C:\\Program Files\\app.exe", *args])) == ["C:\\Program Files\\app.exe", *args]


def test_known_encodings():
    assert quote_argument("") == '""'
    assert quote_argument("plain") == "plain"
    assert quote_argument("a b") == '"a b"'
    assert quote_argument('say "hi"') == '"say \\"hi\\""'
    assert quote_argument("C:\\dir with space\\") == '"C:\\dir with space\\\\"'
    assert quote_argument("C:\\no\\space\\") == "C:\\no\\space\\"
