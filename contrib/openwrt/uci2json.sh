#!/bin/sh
# uci2json.sh: turn one `instance` section of a UCI config file (/etc/config/kcptun-rs) into a
# kcptun-rs JSON config (kcptun-libev schema) on stdout.
#
#   uci2json.sh -l FILE          print the names of the enabled instances, one per line
#   uci2json.sh FILE NAME        print the JSON of instance NAME
#
# It reads the UCI text format itself (awk, POSIX sh) instead of calling `uci`/jshn.sh, so the
# same script runs on the router and, for the test suite, on a build machine without OpenWRT.
# Anonymous sections (`config instance` with no name) are called instanceN, N counting the
# instance sections from 0 (`@instance[N]` is accepted as well).
#
# Option names are the JSON keys; the nested kcp/tcp/udp objects use a prefix: kcp_mtu ->
# "kcp": {"mtu": ...}. `enabled` (default 1) only decides whether the init script starts it.
# Unknown options and values of the wrong type are errors (exit 1, message on stderr), so a typo
# is caught on the router before procd starts a respawn loop.
set -eu

usage() {
    echo "usage: uci2json.sh -l FILE | uci2json.sh FILE NAME" >&2
    exit 2
}

LIST=0
if [ "${1:-}" = "-l" ]; then
    LIST=1
    shift
    [ $# -eq 1 ] || usage
    NAME=""
else
    [ $# -eq 2 ] || usage
    NAME=$2
fi
FILE=$1
[ -r "$FILE" ] || { echo "uci2json.sh: cannot read $FILE" >&2; exit 1; }

exec awk -v list="$LIST" -v want="$NAME" '
# key table: UCI option -> JSON path and type (s string, i integer, b boolean)
BEGIN {
    n = split("listen:s connect:s kcp_bind:s kcp_connect:s udp_bind:s udp_connect:s " \
        "method:s psk:s password:s log:s user:s netdev:s http_listen:s " \
        "timeout:i linger:i keepalive:i time_wait:i loglevel:i max_sessions:i max_dials:i " \
        "kcp_mtu:i kcp_sndwnd:i kcp_rcvwnd:i kcp_nodelay:i kcp_interval:i kcp_resend:i " \
        "kcp_nc:i kcp_flush:i " \
        "tcp_reuseport:b tcp_keepalive:b tcp_nodelay:b tcp_sndbuf:i tcp_rcvbuf:i " \
        "udp_reuseport:b udp_sndbuf:i udp_rcvbuf:i", defs, " ")
    for (i = 1; i <= n; i++) { split(defs[i], kv, ":"); type[kv[1]] = kv[2]; order[i] = kv[1] }
    nkeys = n
    err = 0; sect = ""; ninst = 0; found = 0; mine = 0
    ctl = ""; for (i = 1; i < 32; i++) ctl = ctl sprintf("%c", i)
}

function fail(msg) { printf "uci2json.sh: %s:%d: %s\n", FILENAME, FNR, msg > "/dev/stderr"; err = 1 }

# Split a line into words with the shell-like quoting UCI uses: single quotes, double quotes (backslash
# escapes), bare words, and concatenations of them. Returns the word count, words in w[].
function words(line,    i, c, cur, inword, q, nw) {
    nw = 0; cur = ""; inword = 0; q = ""
    for (i = 1; i <= length(line); i++) {
        c = substr(line, i, 1)
        if (q == "\047") { if (c == "\047") q = ""; else cur = cur c; continue }
        if (q == "\"") {
            if (c == "\\" && i < length(line)) { i++; cur = cur substr(line, i, 1); continue }
            if (c == "\"") q = ""; else cur = cur c
            continue
        }
        if (c == "#" && !inword) break
        if (c == " " || c == "\t") { if (inword) { w[++nw] = cur; cur = ""; inword = 0 } continue }
        if (c == "\047" || c == "\"") { q = c; inword = 1; continue }
        if (c == "\\" && i < length(line)) { i++; c = substr(line, i, 1) }
        cur = cur c; inword = 1
    }
    if (q != "") { fail("unterminated quote"); return 0 }
    if (inword) w[++nw] = cur
    return nw
}

function jstr(s,    out, i, c) {
    out = ""
    for (i = 1; i <= length(s); i++) {
        c = substr(s, i, 1)
        if (c == "\\") out = out "\\\\"
        else if (c == "\"") out = out "\\\""
        else if (c == "\t") out = out "\\t"
        else if (c < " ") out = out sprintf("\\u%04x", index(ctl, c))
        else out = out c
    }
    return "\"" out "\""
}

function value(k, v) {
    if (type[k] == "s") return jstr(v)
    if (type[k] == "i") {
        if (v !~ /^-?[0-9]+$/) { fail("option " k ": expected an integer, got \047" v "\047"); return "" }
        sub(/^-?0+/, (v ~ /^-/) ? "-" : "", v); if (v == "" || v == "-") v = 0
        return v
    }
    if (v ~ /^(1|yes|on|true|enabled)$/) return "true"
    if (v ~ /^(0|no|off|false|disabled)$/) return "false"
    fail("option " k ": expected a boolean (0/1), got \047" v "\047"); return ""
}

{
    nw = words($0)
    if (nw == 0) next
    if (w[1] == "package") next
    if (w[1] == "config") {
        cur = ""; mine = 0
        if (w[2] != "instance") { sect = "other"; next }
        sect = "instance"
        auto = "instance" ninst; idx = "@instance[" ninst "]"; ninst++
        cur = (nw >= 3) ? w[3] : auto
        names[++nnames] = cur; enabled[cur] = 1
        mine = (want != "" && (want == cur || want == auto || want == idx))
        if (mine) found = 1
        next
    }
    if (w[1] == "option" || w[1] == "list") {
        if (sect != "instance") next
        if (nw < 3) { fail("option without a value"); next }
        if (w[1] == "list") { if (mine) fail("list " w[2] ": kcptun-rs takes no lists"); next }
        k = w[2]; v = w[3]
        if (k == "enabled") {
            enabled[cur] = (v ~ /^(1|yes|on|true|enabled)$/) ? 1 : 0
            next
        }
        if (!(k in type)) { if (mine) fail("unknown option \047" k "\047"); next }
        if (mine) { val[k] = value(k, v); has[k] = 1 }
        next
    }
    fail("cannot parse: " $0)
}

END {
    if (list) {
        for (i = 1; i <= nnames; i++) if (enabled[names[i]]) print names[i]
        exit err
    }
    if (!found) { printf "uci2json.sh: no instance \047%s\047 in %s\n", want, FILENAME > "/dev/stderr"; exit 1 }
    if (err) exit 1
    # Top-level keys first, then one object each for kcp, tcp and udp.
    printf "{"; sep = "\n"
    for (i = 1; i <= nkeys; i++) {
        k = order[i]
        if (!(k in has) || k ~ /^(kcp|tcp|udp)_/ && k !~ /^(kcp_bind|kcp_connect|udp_bind|udp_connect)$/) continue
        printf "%s  %s: %s", sep, jstr(k), val[k]; sep = ",\n"
    }
    split("kcp tcp udp", groups, " ")
    for (g = 1; g <= 3; g++) {
        inner = ""; isep = "\n"
        for (i = 1; i <= nkeys; i++) {
            k = order[i]
            if (!(k in has) || index(k, groups[g] "_") != 1) continue
            if (k ~ /^(kcp_bind|kcp_connect|udp_bind|udp_connect)$/) continue
            inner = inner isep "    " jstr(substr(k, length(groups[g]) + 2)) ": " val[k]; isep = ",\n"
        }
        if (inner != "") { printf "%s  %s: {%s\n  }", sep, jstr(groups[g]), inner; sep = ",\n" }
    }
    printf "\n}\n"
}' "$FILE"
