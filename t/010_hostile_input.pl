# Hostile input (issue 5): a seeded generator throws thousands of malformed events,
# schemas and settings at the SQL API of a real server with running workers: NULL in
# every argument, empty strings, keys, types, dedup ids, headers and payloads just under
# and over their limits, deep JSON, invalid \u escapes, NUL bytes, invalid UTF-8, odd
# numbers, batches over evproc.max_batch_events, batch elements of every wrong type,
# unknown fields, hostile payload schemas, bad topic/subscription settings, bad
# arguments to replay/re-drive/purge/event status, and transactions that publish
# through savepoints and then commit or roll back.
#
# Each case predicts its outcome: success with its exact effect (ids, dedup hits,
# stored columns), or an ERROR with one SQLSTATE (table %SQLSTATES below) and a clean
# message. After every batch of cases the postmaster is the same and no backend
# crashed; at the end evproc.log, evproc.dedup and evproc_topic_stats (published,
# dedup_hits, rejected_invalid) agree with what the generator counted, and the
# subscription's handler saw exactly the events of its topic.
#
# Reproduce: EVPROC_HOSTILE_SEED=<seed> (printed) EVPROC_HOSTILE_CASES=<n>;
# EVPROC_HOSTILE_DUMP=<dir> keeps the SQL of each psql session.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;

my $seed = $ENV{EVPROC_HOSTILE_SEED} // 20250605;
my $case_count = $ENV{EVPROC_HOSTILE_CASES} // 3000;
my $cases_per_session = 150;
diag("hostile input: seed $seed, $case_count cases "
	  . "(reproduce: EVPROC_HOSTILE_SEED=$seed EVPROC_HOSTILE_CASES=$case_count)");

# SQLSTATEs the generators expect, by what causes them.
my %SQLSTATES = (
	'00000' => 'success',
	'22001' => 'key, type or dedup id too long',
	'22003' => 'number out of range for its SQL type (integer, real, numeric)',
	'22004' => 'NULL topic, payload or events; NULL inside event_ids',
	'22007' => 'malformed interval text',
	'22008' => 'interval out of range',
	'22021' => 'invalid UTF-8 or NUL byte in text',
	'22023' => 'evproc: empty/invalid/oversized argument, bad batch element, bad setting or schema',
	'22P02' => 'malformed JSON text (incl. lone surrogates, NaN)',
	'22P05' => '\u0000 in jsonb',
	'23514' => 'payload violates the topic schema',
	'42501' => 'subscription owned by a superuser',
	'42704' => 'unknown topic, subscription, event, replay or role',
	'42710' => 'topic or subscription exists',
	'42883' => 'unknown handler',
	'42P13' => 'handler of the wrong shape',
	'0A000' => 'change of partitions of a topic with events',
	'54000' => 'chr(0)',
	'54001' => 'JSON nested too deep for the parser (stack depth)',);

# ---------------------------------------------------------------------------------------
# A deterministic PRNG (xorshift32): the same seed gives the same cases everywhere.
# ---------------------------------------------------------------------------------------
my $rng = (($seed * 2654435761) ^ 0x5bd1e995) & 0xFFFFFFFF;
$rng ||= 1;

sub rnd
{
	my $x = $rng;
	$x ^= ($x << 13) & 0xFFFFFFFF;
	$x ^= $x >> 17;
	$x ^= ($x << 5) & 0xFFFFFFFF;
	$rng = $x;
	return $x;
}
rnd() for 1 .. 16;
sub irand { my ($n) = @_; return rnd() % $n; }
sub pick { return $_[ irand(scalar @_) ]; }
sub chance { my ($p) = @_; return irand(10_000) < $p * 10_000; }

# Weighted choice: pairs (weight, value).
sub weighted
{
	my @pairs = @_;
	my $total = 0;
	$total += $pairs[ 2 * $_ ] for 0 .. $#pairs / 2;
	my $r = irand($total);
	for my $i (0 .. $#pairs / 2)
	{
		return $pairs[ 2 * $i + 1 ] if $r < $pairs[ 2 * $i ];
		$r -= $pairs[ 2 * $i ];
	}
	die 'unreachable';
}

# ---------------------------------------------------------------------------------------
# Quoting. Strings are Perl byte strings (UTF-8 bytes); standard_conforming_strings is
# on, so a literal only doubles its quotes.
# ---------------------------------------------------------------------------------------
sub lit
{
	my ($s) = @_;
	return 'NULL' unless defined $s;
	(my $q = $s) =~ s/'/''/g;
	return "'$q'";
}

# JSON string text for raw bytes: some ASCII characters written as \u escapes, the
# emoji as a surrogate pair, so the server decodes escapes into the bytes we count.
my $EMOJI = "\xF0\x9F\x98\x80";

sub jstr
{
	my ($raw) = @_;
	my $out = '"';
	my $i = 0;
	while ($i < length $raw)
	{
		if (substr($raw, $i, 4) eq $EMOJI)
		{
			$out .= chance(0.5) ? '\ud83d\ude00' : $EMOJI;
			$i += 4;
			next;
		}
		my $c = substr($raw, $i, 1);
		my $o = ord $c;
		if ($c eq '"' || $c eq '\\') { $out .= "\\$c"; }
		elsif ($o < 0x20) { $out .= sprintf('\u%04x', $o); }
		elsif ($o < 0x80 && chance(0.05)) { $out .= sprintf('\u%04X', $o); }
		else { $out .= $c; }
		$i++;
	}
	return "$out\"";
}

sub jobj
{
	my (@pairs) = @_;    # (name, json text) ...
	my @parts;
	for (my $i = 0; $i < @pairs; $i += 2)
	{
		push @parts, jstr($pairs[$i]) . ':' . $pairs[ $i + 1 ];
	}
	return '{' . join(',', @parts) . '}';
}

# ---------------------------------------------------------------------------------------
# The model: what the server must hold. Per topic, transactional state (committed event
# tokens, published, dedup ids -> token) and immediate counters (dedup hits and
# rejections are counted at once, even when the transaction then rolls back).
# Event ids are unknown until the cases run: an event is a token ("c12e3") bound to its
# id when its case's result is checked.
# ---------------------------------------------------------------------------------------
my %topic;    # name -> { partitions, schema, tx => {...}, hits, rejected }
for my $name (qw(h_plain h_schema h_empty))
{
	$topic{$name} = {
		partitions => { h_plain => 4, h_schema => 2, h_empty => 8 }->{$name},
		tx => { events => [], published => 0, dedup => {} },
		hits => 0,
		rejected => 0,
	};
}

sub clone_tx
{
	my %copy;
	for my $name (keys %topic)
	{
		my $tx = $topic{$name}{tx};
		$copy{$name} = {
			events => [ @{ $tx->{events} } ],
			published => $tx->{published},
			dedup => { %{ $tx->{dedup} } }
		};
	}
	return \%copy;
}

sub restore_tx
{
	my ($copy) = @_;
	$topic{$_}{tx} = $copy->{$_} for keys %$copy;
}

# ---------------------------------------------------------------------------------------
# Field generators. Each returns { sql => expression, fault => undef | {state, counted,
# pre} }: pre means the error is raised while evaluating the argument, before evproc
# runs (never counted); counted means enqueue counts it in rejected_invalid.
# ---------------------------------------------------------------------------------------
my @PRECALL_TEXT = (
	[ "E'a\\000b'", '22021' ],
	[ 'chr(0)', '54000' ],
	[ q{convert_from('\x61ff62'::bytea, 'UTF8')}, '22021' ],
	[ q{convert_from('\x61c3'::bytea, 'UTF8')}, '22021' ],);

sub random_text
{
	my ($max_chars) = @_;
	my $n = 1 + irand($max_chars);
	my $s = '';
	for (1 .. $n)
	{
		$s .= weighted(
			30, pick('a' .. 'z', '0' .. '9'),
			3, pick(' ', ':', '.', '-', '_', '/'),
			2, pick("'", '"', '\\', '%', '$', '{', '}', '[', ']', ','),
			1, pick("\n", "\t", "\r"),
			2, "\xC3\xA9",
			1, "\xD0\xBA",
			1, $EMOJI);
	}
	return $s;
}

# A text field (key, type, dedup_id) with its byte limit; $pool: draw from few values.
sub gen_text_field
{
	my ($limit, $pool) = @_;
	my $kind = weighted(
		20, 'null', 40, 'small', 6, 'at_limit', 6, 'over_limit',
		4, 'empty', 4, 'multibyte_limit', 3, 'precall');
	if ($kind eq 'null') { return { sql => 'NULL', raw => undef }; }
	if ($kind eq 'small')
	{
		my $v = defined $pool ? "$pool-" . irand(40) : random_text(12);
		return { sql => lit($v), raw => $v };
	}
	if ($kind eq 'at_limit')
	{
		my $v = 'x' x ($limit - 1) . pick('y', 'z');
		return { sql => lit($v), raw => $v };
	}
	if ($kind eq 'over_limit')
	{
		my $v = 'x' x ($limit + pick(1, 2, 1000));
		return { sql => "repeat('x', " . length($v) . ')', raw => $v,
			fault => { state => '22001', counted => 1 } };
	}
	if ($kind eq 'multibyte_limit')
	{
		# limit/2 two-byte characters: exactly the limit; one more byte is over.
		my $v = "\xC3\xA9" x ($limit / 2);
		my $over = chance(0.5);
		$v .= 'x' if $over;
		return { sql => lit($v), raw => $v,
			fault => $over ? { state => '22001', counted => 1 } : undef };
	}
	if ($kind eq 'empty')
	{
		return { sql => "''", raw => '', fault => { state => '22023', counted => 1 } };
	}
	my $p = pick(@PRECALL_TEXT);
	return { sql => $p->[0], fault => { state => $p->[1], pre => 1 } };
}

# Numbers jsonb accepts, as JSON text.
my @NUMBERS = (
	'0', '-0', '-0.0', '1', '-1', '1.5', '1e308', '-1e308', '1e-400', '2.5e-324',
	'123456789012345678901234567890', '-9223372036854775808', '18446744073709551616',
	'1e400', '0.1', '3.141592653589793238462643383279');

sub random_json
{
	my ($depth) = @_;
	my $kind = $depth > 3 ? irand(4) : irand(7);
	return pick(@NUMBERS) if $kind == 0;
	return jstr(random_text(10)) if $kind == 1;
	return pick('true', 'false', 'null') if $kind == 2;
	return jstr('') if $kind == 3;
	if ($kind == 4)
	{
		return '[' . join(',', map { random_json($depth + 1) } 1 .. irand(4)) . ']';
	}
	return random_object($depth + 1);
}

sub random_object
{
	my ($depth) = @_;
	my %seen;
	my @pairs;
	for (1 .. irand(5))
	{
		my $k = weighted(10, random_text(6), 1, '', 1, 'a b');
		next if $seen{$k}++;
		push @pairs, $k, random_json($depth);
	}
	return jobj(@pairs);
}

# Pre-call failures of a jsonb argument.
my @PRECALL_JSON = (
	[ q~'{"a":'::jsonb~, '22P02' ],
	[ q~'{"a":"\ud800"}'::jsonb~, '22P02' ],
	[ q~'{"a":"\udc00x"}'::jsonb~, '22P02' ],
	[ q~'{"a":"\ud83dx"}'::jsonb~, '22P02' ],
	[ q~'{"a":"\u12"}'::jsonb~, '22P02' ],
	[ q~'{"a":"\u0000"}'::jsonb~, '22P05' ],
	[ q~'{"\u0000":1}'::jsonb~, '22P05' ],
	[ q~'{"n":NaN}'::jsonb~, '22P02' ],
	[ q~'{"n":Infinity}'::jsonb~, '22P02' ],
	[ q~'{"n":1e1000000}'::jsonb~, '22003' ],
	[ q~'{"a":1}garbage'::jsonb~, '22P02' ],
	[ q~''::jsonb~, '22P02' ],
	[ q~convert_from('\x7b2261223a22ff227d'::bytea, 'UTF8')::jsonb~, '22021' ],
	[ q~('{"a":' || repeat('[', 200000) || repeat(']', 200000) || '}')::jsonb~, '54001' ],);

my @PRECALL_BATCH = (
	[ q~'[{"payload":{}}'::jsonb~, '22P02' ],
	[ q~'[{"payload":{"a":"\ud800"}}]'::jsonb~, '22P02' ],
	[ q~'[{"payload":{},"key":"\udfff"}]'::jsonb~, '22P02' ],
	[ q~'[{"payload":{"a":"\u0000"}}]'::jsonb~, '22P05' ],
	[ q~'[{"payload":{"n":NaN}}]'::jsonb~, '22P02' ],
	[ q~'[{"payload":{"n":-1e1000000}}]'::jsonb~, '22003' ],
	[ q~('[' || repeat('[', 200000) || repeat(']', 200000) || ']')::jsonb~, '54001' ],
	[ q~convert_from('\x5b7b227061796c6f6164223a7b7d2c226b6579223a22ff227d5d'::bytea, 'UTF8')::jsonb~, '22021' ],);

# Payload of the plain topic (no schema).
sub gen_payload
{
	my $kind = weighted(
		50, 'object', 3, 'deep', 3, 'big', 4, 'null', 6, 'not_object', 6, 'precall');
	if ($kind eq 'object') { return { sql => lit(random_object(0)) . '::jsonb' }; }
	if ($kind eq 'deep')
	{
		my $d = pick(64, 65, 1000, 5000);
		return {
			sql => "(repeat('{\"a\":', $d) || '1' || repeat('}', $d))::jsonb",
			deep => $d };
	}
	if ($kind eq 'big')
	{
		# jsonb_build_object('p', <n characters>) takes n + 17 bytes.
		my $n = 1048576 - 17 + pick(-1, 0, 1, 4096);
		return {
			sql => "jsonb_build_object('p', repeat('x', $n))",
			fault => $n + 17 > 1048576 ? { state => '22023', counted => 1 } : undef };
	}
	if ($kind eq 'null')
	{
		return { sql => 'NULL', fault => { state => '22004', counted => 1 } };
	}
	if ($kind eq 'not_object')
	{
		my $v = pick('[]', '[{}]', '"s"', '1', 'null', 'true', '-0');
		return { sql => lit($v) . '::jsonb', fault => { state => '22023', counted => 1 } };
	}
	my $p = pick(@PRECALL_JSON);
	return { sql => $p->[0], fault => { state => $p->[1], pre => 1 } };
}

sub gen_headers
{
	my $kind = weighted(40, 'null', 30, 'object', 4, 'big', 5, 'not_object', 3, 'precall');
	return { sql => 'NULL' } if $kind eq 'null';
	return { sql => lit(random_object(0)) . '::jsonb' } if $kind eq 'object';
	if ($kind eq 'big')
	{
		my $n = 65536 - 17 + pick(-1, 0, 1, 100);
		return {
			sql => "jsonb_build_object('h', repeat('y', $n))",
			fault => $n + 17 > 65536 ? { state => '22023', counted => 1 } : undef };
	}
	if ($kind eq 'not_object')
	{
		my $v = pick('[]', '"h"', '0', 'false', 'null');
		return { sql => lit($v) . '::jsonb', fault => { state => '22023', counted => 1 } };
	}
	my $p = pick(@PRECALL_JSON);
	return { sql => $p->[0], fault => { state => $p->[1], pre => 1 } };
}

# The schema topic's payload schema, and payloads built field by field, each field
# valid or not by construction.
my $SCHEMA = '{"type":"object","required":["id"],"additionalProperties":false,'
  . '"properties":{"id":{"type":"integer","minimum":0,"maximum":1000000},'
  . '"name":{"type":"string","minLength":1,"maxLength":8},'
  . '"tags":{"type":"array","items":{"type":"string","enum":["a","b","c"]}},'
  . '"n":{"type":"number"},"flag":{"type":["boolean","null"]}}}';

my %SCHEMA_FIELDS = (
	id => {
		ok => [ '0', '7', '1000000', '1.0', '5e2', '-0', '999999.0' ],
		bad => [ '-1', '1000001', '1.5', '"7"', 'null', 'true', '1e400', '1e-400', '[]', '{}' ] },
	name => {
		ok => [ '"abc"', '"12345678"', jstr("\xD0\xBA\xD0\xBB\xD1\x8E\xD1\x87"),
			jstr("\xC3\xA9" x 8), jstr($EMOJI x 8) ],
		bad => [ '""', '"123456789"', jstr("\xC3\xA9" x 9), '5', 'null' ] },
	tags => {
		ok => [ '[]', '["a"]', '["c","b","a","a"]' ],
		bad => [ '["d"]', '[1]', '"a"', '[["a"]]', '[null]',
			'[' . ('[' x 70) . (']' x 70) . ']' ] },
	n => {
		ok => [ '1e308', '-1e308', '1e-400', '123456789012345678901234567890', '-0.0', '42',
			'1e400', '-1e309' ],
		bad => [ '"1"', 'null', 'true' ] },
	flag => { ok => [ 'true', 'false', 'null' ], bad => [ '0', '"true"', '[]' ] },);

sub gen_schema_payload
{
	my $kind = weighted(85, 'fields', 5, 'deep', 4, 'null', 3, 'not_object', 3, 'precall');
	if ($kind eq 'deep')
	{
		my $d = pick(63, 64, 100, 3000);
		# {"id":1,"n":[...]}: depth d+1 containers counting the root.
		return {
			sql => "('{\"id\":1,\"tags\":' || repeat('[', $d) || repeat(']', $d) || '}')::jsonb",
			fault => { state => '23514', counted => 1 } };
	}
	return { sql => 'NULL', fault => { state => '22004', counted => 1 } } if $kind eq 'null';
	if ($kind eq 'not_object')
	{
		return { sql => q{'[{"id":1}]'::jsonb}, fault => { state => '22023', counted => 1 } };
	}
	if ($kind eq 'precall')
	{
		my $p = pick(@PRECALL_JSON);
		return { sql => $p->[0], fault => { state => $p->[1], pre => 1 } };
	}
	my @pairs;
	my $valid = 1;
	for my $field (qw(id name tags n flag))
	{
		my $choice = $field eq 'id' ? weighted(85, 'ok', 10, 'bad', 5, 'absent')
		  : weighted(45, 'absent', 45, 'ok', 10, 'bad');
		if ($choice eq 'absent')
		{
			$valid = 0 if $field eq 'id';    # required
			next;
		}
		my $v = pick(@{ $SCHEMA_FIELDS{$field}{$choice} });
		$valid = 0 if $choice eq 'bad';
		push @pairs, $field, $v;
	}
	if (chance(0.05))
	{
		push @pairs, 'extra', '1';
		$valid = 0;
	}
	my $text = jobj(@pairs);
	return {
		sql => lit($text) . '::jsonb',
		json => $text,
		fault => $valid ? undef : { state => '23514', counted => 1 } };
}

# ---------------------------------------------------------------------------------------
# Cases. A case is { sql => statement text producing one value (or none), expect =>
# SQLSTATE, check => sub(result) -> error or undef (only on success), verify => SQL
# printing 'V...' to compare, on_ok / on_fail => model updates run at check time }.
# Model updates for predictions happen at generation time; token bindings at check time.
# ---------------------------------------------------------------------------------------
my $case_no = 0;
my (%token_id, %id_token);
my $max_id = 0;

# Binds a fresh token to the id the server returned: new and increasing.
sub bind_fresh
{
	my ($token, $id) = @_;
	return "id '$id' is not a number" unless defined $id && $id =~ /^\d+$/;
	return "fresh event got id $id, not above $max_id" unless $id > $max_id;
	$max_id = $id;
	$token_id{$token} = $id;
	$id_token{$id} = $token;
	return undef;
}

# One event through enqueue's checks: the first fault in CheckEvent order wins.
sub event_fault
{
	my (@fields) = @_;
	for my $f (@fields) { return $f->{fault} if $f->{fault} && $f->{fault}{state} ne '23514'; }
	for my $f (@fields) { return $f->{fault} if $f->{fault}; }
	return undef;
}

# At most one argument may fail before the call (their order of evaluation is the
# planner's business): the others are replaced by a harmless value.
sub one_precall_arg
{
	my ($harmless, @args) = @_;    # $harmless: arg -> [sql, fault]
	my $seen = 0;
	for my $a (@args)
	{
		next unless $a->{fault} && $a->{fault}{pre};
		next unless $seen++;
		my ($sql, $fault) = @{ $harmless->($a) };
		$a->{sql} = $sql;
		$a->{raw} = undef;
		$a->{fault} = $fault;
	}
}

# Applies a predicted successful event to the model; returns [token, hit?].
sub model_event
{
	my ($t, $dedup, $token) = @_;
	my $tx = $topic{$t}{tx};
	if (defined $dedup && exists $tx->{dedup}{$dedup})
	{
		$topic{$t}{hits}++;
		return [ $tx->{dedup}{$dedup}, 1 ];
	}
	$tx->{dedup}{$dedup} = $token if defined $dedup;
	push @{ $tx->{events} }, $token;
	$tx->{published}++;
	return [ $token, 0 ];
}

sub gen_topic_arg
{
	my ($real) = @_;
	my $kind = weighted(90, 'ok', 2, 'null', 2, 'empty', 2, 'unknown', 1, 'long', 1, 'precall');
	return { sql => lit($real) } if $kind eq 'ok';
	return { sql => 'NULL', fault => { state => '22004' } } if $kind eq 'null';
	return { sql => "''", fault => { state => '22023' } } if $kind eq 'empty';
	return { sql => lit(pick('nope', uc($real), "$real ", "h_plain\n")), fault => { state => '42704' } }
	  if $kind eq 'unknown';
	return { sql => "repeat('t', 100000)", fault => { state => '42704' } } if $kind eq 'long';
	my $p = pick(@PRECALL_TEXT);
	return { sql => $p->[0], fault => { state => $p->[1], pre => 1 } };
}

sub gen_enqueue
{
	my $t = chance(0.7) ? 'h_plain' : 'h_schema';
	my $n = ++$case_no;
	my $topic_arg = gen_topic_arg($t);
	my $key = gen_text_field(512);
	my $type = gen_text_field(128);
	my $dedup = gen_text_field(256, 'dup');
	my $payload = $t eq 'h_schema' ? gen_schema_payload() : gen_payload();
	my $headers = gen_headers();
	my @fields = ($key, $type, $dedup, $payload, $headers);
	one_precall_arg(
		sub {
			$_[0] == $payload ? [ q{'{}'::jsonb}, undef ]
			  : $_[0] == $topic_arg ? [ lit($t), undef ]
			  : [ 'NULL', undef ];
		},
		$topic_arg, @fields);
	my @args = map { $_->{sql} } ($topic_arg, $key, $payload, $type, $dedup, $headers);
	my $call = 'evproc_enqueue(' . join(', ', @args) . ')';
	# Order: arguments, topic name (NULL, empty), topic look-up, then CheckEvent.
	my ($fault) = grep { $_ && $_->{pre} } map { $_->{fault} } ($topic_arg, @fields);
	$fault //= $topic_arg->{fault} // event_fault(@fields);
	if ($fault)
	{
		$topic{$t}{rejected}++ if $fault->{counted};
		return { expr => $call, expect => $fault->{state} };
	}
	my $token = "c${n}";
	my ($owner, $hit) = @{ model_event($t, $dedup->{raw}, $token) };
	my $verify;
	unless ($hit)
	{
		$verify =
		    "SELECT 'V' || coalesce(bool_and(l.topic_id = (SELECT id FROM evproc.topic WHERE name = "
		  . lit($t) . ") AND l.key IS NOT DISTINCT FROM $key->{sql} "
		  . "AND l.type IS NOT DISTINCT FROM $type->{sql} AND l.dedup_id IS NOT DISTINCT FROM $dedup->{sql} "
		  . "AND l.payload = $payload->{sql} AND l.headers IS NOT DISTINCT FROM $headers->{sql})::text, 'missing') "
		  . "FROM evproc.log l WHERE l.id = :'h_r'::bigint";
	}
	return {
		expr => $call,
		expect => '00000',
		verify => $verify,
		verify_expect => 'Vtrue',
		check => sub {
			my ($r) = @_;
			return bind_fresh($token, $r) unless $hit;
			my $want = $token_id{$owner};
			return "dedup hit returned $r, the first event is $want"
			  unless defined $want && $r eq $want;
			return undef;
		} };
}

# Batch elements as JSON text with the fault each carries, in enqueue_batch's order:
# ReadBatchEvent (element type, unknown field, field JSON types; not counted), then
# CheckEvent (counted).
sub gen_batch_element
{
	my ($t) = @_;
	my $kind = weighted(80, 'event', 4, 'not_object', 3, 'unknown_field', 6, 'wrong_field_type');
	if ($kind eq 'not_object')
	{
		return { json => pick('1', '"x"', 'null', '[]', 'true', '[{"payload":{}}]'),
			fault => { state => '22023', counted => 1 } };
	}
	my (@pairs, $fault, $dedup, $hit_possible);
	my %f;
	for my $field (qw(key type dedup_id))
	{
		my $limit = { key => 512, type => 128, dedup_id => 256 }->{$field};
		my $v = weighted(
			30, undef, 50, ($field eq 'dedup_id' ? 'dup-' . irand(40) : random_text(10)),
			5, 'x' x $limit, 5, 'x' x ($limit + 1), 5, '');
		$f{$field} = $v;
		if (defined $v || chance(0.3)) { push @pairs, $field, defined $v ? jstr($v) : 'null'; }
	}
	my $payload = $t eq 'h_schema' ? gen_schema_payload() : undef;
	my $payload_json;
	if ($t eq 'h_schema' && defined $payload->{json}) { $payload_json = $payload->{json}; }
	elsif ($t eq 'h_schema') { $payload_json = '{"id":1}'; $payload = {}; }
	else { $payload_json = random_object(0); $payload = {}; }
	my $payload_kind = weighted(90, 'object', 3, 'absent', 2, 'null', 3, 'array', 2, 'scalar');
	$payload_json = { object => $payload_json, null => 'null', array => '[1]',
		scalar => pick('"p"', '1', 'true') }->{$payload_kind} // $payload_json;
	push @pairs, 'payload', $payload_json unless $payload_kind eq 'absent';
	my $headers_kind = weighted(70, 'absent', 20, 'object', 3, 'null', 3, 'array', 2, 'scalar');
	push @pairs, 'headers',
	  { object => random_object(1), null => 'null', array => '[]', scalar => '"h"' }->{$headers_kind}
	  unless $headers_kind eq 'absent';
	if ($kind eq 'unknown_field')
	{
		my $name = pick('dedupe_id', 'Key', 'payloads', '', 'id', "k\xC3\xA9y");
		splice @pairs, 2 * irand(@pairs / 2 + 1), 0, $name, '1';
		return { json => jobj(@pairs), fault => { state => '22023', counted => 1 } };
	}
	if ($kind eq 'wrong_field_type')
	{
		my $field = pick('key', 'type', 'dedup_id');
		my $bad = pick('1', '{}', '[]', 'true', '-0');
		my %h = @pairs;
		if (exists $h{$field})
		{
			for (my $i = 0; $i < @pairs; $i += 2) { $pairs[ $i + 1 ] = $bad if $pairs[$i] eq $field; }
		}
		else { push @pairs, $field, $bad; }
		return { json => jobj(@pairs), fault => { state => '22023', counted => 1 } };
	}
	# ReadBatchEvent: payload and headers must be JSON containers when present. Like every
	# malformed element, counted as a rejection.
	return { json => jobj(@pairs), fault => { state => '22023', counted => 1 } }
	  if $payload_kind eq 'scalar' || $headers_kind eq 'scalar';
	# CheckEvent order: key, type, dedup_id, payload, headers, schema.
	for my $field (qw(key type dedup_id))
	{
		my $v = $f{$field};
		next unless defined $v;
		my $limit = { key => 512, type => 128, dedup_id => 256 }->{$field};
		return { json => jobj(@pairs), fault => { state => '22023', counted => 1 } } if $v eq '';
		return { json => jobj(@pairs), fault => { state => '22001', counted => 1 } }
		  if length($v) > $limit;
	}
	return { json => jobj(@pairs), fault => { state => '22004', counted => 1 } }
	  if $payload_kind eq 'absent' || $payload_kind eq 'null';
	return { json => jobj(@pairs), fault => { state => '22023', counted => 1 } }
	  if $payload_kind eq 'array' || $headers_kind eq 'array';
	return { json => jobj(@pairs), fault => $payload->{fault} } if $payload->{fault};
	return { json => jobj(@pairs), dedup => $f{dedup_id} };
}

sub gen_batch
{
	my $t = chance(0.7) ? 'h_plain' : 'h_schema';
	my $n = ++$case_no;
	my $topic_arg = gen_topic_arg($t);
	$topic_arg = { sql => lit($t) } if $topic_arg->{fault} && $topic_arg->{fault}{pre};
	my $shape = weighted(
		70, 'elements', 4, 'empty', 3, 'null', 4, 'not_array', 4, 'over_max',
		3, 'at_max', 4, 'precall');
	my ($events_sql, @elements, $fault);
	if ($shape eq 'elements')
	{
		my $count = 1 + irand(chance(0.2) ? 50 : 6);
		@elements = map { gen_batch_element($t) } 1 .. $count;
		$events_sql = lit('[' . join(',', map { $_->{json} } @elements) . ']') . '::jsonb';
	}
	elsif ($shape eq 'empty') { $events_sql = q{'[]'::jsonb}; }
	elsif ($shape eq 'null') { $events_sql = 'NULL'; $fault = { state => '22004' }; }
	elsif ($shape eq 'not_array')
	{
		$events_sql = lit(pick('{}', '{"payload":{}}', '1', '"[]"', 'null')) . '::jsonb';
		$fault = { state => '22023' };
	}
	elsif ($shape eq 'over_max' || $shape eq 'at_max')
	{
		my $count = $shape eq 'at_max' ? 50 : pick(51, 1000, 100000);
		$events_sql = "(SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('id', g), "
		  . "'key', 'g' || (g % 7))) FROM generate_series(1, $count) g)";
		if ($shape eq 'at_max')
		{
			@elements = map { {} } 1 .. 50;    # 50 keyed events, no dedup
		}
		else { $fault = { state => '22023' }; }
	}
	else
	{
		my $p = pick(@PRECALL_BATCH);
		$events_sql = $p->[0];
		$fault = { state => $p->[1] };
	}
	my $call = "evproc_enqueue_batch($topic_arg->{sql}, $events_sql)";
	# Order: topic NULL/empty, events NULL, not an array, too many, unknown topic, then
	# element by element.
	my $topic_fault = $topic_arg->{fault};
	if ($fault && $shape eq 'precall') { }
	elsif ($topic_fault && $topic_fault->{state} ne '42704') { $fault = $topic_fault; }
	elsif ($fault) { }
	elsif ($topic_fault) { $fault = $topic_fault; }
	else
	{
		for my $e (@elements)
		{
			next unless $e->{fault};
			$fault = $e->{fault};
			last;
		}
	}
	if ($fault)
	{
		$topic{$t}{rejected}++ if $fault->{counted};
		return { expr => $call, expect => $fault->{state} };
	}
	my @plan;    # per element: [token, hit]
	for my $i (0 .. $#elements)
	{
		push @plan, model_event($t, $elements[$i]{dedup}, "c${n}e$i");
	}
	my @fresh = grep { !$plan[$_][1] } 0 .. $#plan;
	my $verify;
	if (@fresh)
	{
		$verify =
		    "SELECT 'V' || coalesce(bool_and(l.topic_id = (SELECT id FROM evproc.topic WHERE name = "
		  . lit($t) . ") AND l.key IS NOT DISTINCT FROM x.e->>'key' AND l.type IS NOT DISTINCT FROM x.e->>'type' "
		  . "AND l.dedup_id IS NOT DISTINCT FROM x.e->>'dedup_id' AND l.payload = x.e->'payload' "
		  . "AND l.headers IS NOT DISTINCT FROM nullif(x.e->'headers', 'null'))::text, 'missing') || ':' || count(l.id) "
		  . "FROM jsonb_array_elements($events_sql) WITH ORDINALITY AS x(e, i) "
		  . "LEFT JOIN evproc.log l ON l.id = (:'h_r'::bigint[])[x.i] "
		  . "WHERE x.i = ANY ('{" . join(',', map { $_ + 1 } @fresh) . "}'::int[])";
	}
	return {
		expr => $call,
		expect => '00000',
		verify => $verify,
		verify_expect => 'Vtrue:' . scalar(@fresh),
		check => sub {
			my ($r) = @_;
			return "result '$r' is not an id array" unless $r =~ /^\{([\d,]*)\}$/;
			my @ids = length $1 ? split(/,/, $1) : ();
			return 'got ' . scalar(@ids) . ' ids for ' . scalar(@plan) . ' events'
			  unless @ids == @plan;
			for my $i (0 .. $#plan)
			{
				my ($token, $hit) = @{ $plan[$i] };
				if (!$hit)
				{
					my $err = bind_fresh($token, $ids[$i]);
					return "events[$i]: $err" if $err;
				}
				elsif (!defined $token_id{$token} || $token_id{$token} ne $ids[$i])
				{
					return "events[$i]: dedup hit returned $ids[$i], the first event is "
					  . ($token_id{$token} // 'unknown');
				}
			}
			return undef;
		} };
}

# Hostile payload schemas: [json text or SQL, expected state when valid otherwise].
my @BAD_SCHEMAS = (
	'"x"', '[]', '1', '{"type":"strin"}', '{"type":1}', '{"type":[]}', '{"type":["string",2]}',
	'{"pattern":"^a+$"}', '{"$ref":"#"}', '{"allOf":[{}]}', '{"minimum":"x"}', '{"maximum":null}',
	'{"required":"id"}', '{"required":[1]}', '{"minLength":-1}', '{"maxLength":1.5}',
	'{"minLength":1e-400}', '{"minimum":5,"maximum":1}', '{"minLength":3,"maxLength":2}',
	'{"items":[{}]}', '{"items":true}', '{"properties":[]}', '{"properties":{"a":1}}',
	'{"additionalProperties":{}}', '{"enum":[]}', '{"enum":{}}', '{"minimum":1e400,"maximum":1e399}',
	'{"properties":{"a":{"type":"object","bogus":1}}}');

sub gen_schema_setting
{
	my $kind = weighted(30, 'none', 10, 'json_null', 15, 'valid', 30, 'bad', 5, 'deep', 4, 'wide', 6, 'precall');
	return { sql => 'NULL' } if $kind eq 'none';
	return { sql => q{'null'::jsonb} } if $kind eq 'json_null';
	# Any JSON number, also past double range: numbers compare exactly.
	return {
		sql => lit(pick(
				$SCHEMA, '{}', '{"type":"object"}', '{"title":"t","examples":[1e308,-0,"\\u00e9"]}',
				'{"minLength":1e400}', '{"minimum":1e400}', '{"enum":[-1e400]}',
				'{"examples":[1e400]}'))
		  . '::jsonb' }
	  if $kind eq 'valid';
	return { sql => lit(pick(@BAD_SCHEMAS)) . '::jsonb', fault => '22023' } if $kind eq 'bad';
	if ($kind eq 'deep')
	{
		# Subschemas 64 deep compile; 65, or JSON nesting past 256, do not.
		my ($d, $state) = @{ pick([ 63, undef ], [ 64, '22023' ], [ 300, '22023' ], [ 5000, '22023' ]) };
		return {
			sql => "(repeat('{\"items\":', $d) || '{}' || repeat('}', $d))::jsonb",
			fault => $state };
	}
	if ($kind eq 'wide')
	{
		my $n = pick(1000, 20000);
		return {
			sql => "(SELECT jsonb_build_object('additionalProperties', false, 'properties', "
			  . "jsonb_object_agg('p' || g, '{\"type\":\"integer\"}'::jsonb)) FROM generate_series(1, $n) g)" };
	}
	my $p = pick(@PRECALL_JSON);
	return { sql => $p->[0], fault => $p->[1], pre => 1 };
}

sub gen_interval
{
	my ($what) = @_;    # retention (positive), window (non-negative)
	my $v = weighted(
		40, 'ok', 8, 'null', 8, 'negative', 6, 'zero', 5, 'huge', 3, 'malformed', 3, 'out_of_range');
	return { sql => pick(q{'1 microsecond'}, q{'7 days'}, q{'1000 years'}, q{'178000000 years'}) }
	  if $v eq 'ok';
	return { sql => q{'2147483647 days 2147483647 months'}, fault => undef } if $v eq 'huge';
	return { sql => 'NULL', fault => '22023' } if $v eq 'null';
	return { sql => pick(q{'-1 day'}, q{'-1 microsecond'}, q{'-178000000 years'}), fault => '22023' }
	  if $v eq 'negative';
	return { sql => q{'0'}, fault => $what eq 'retention' ? '22023' : undef } if $v eq 'zero';
	return { sql => pick(q{'infinity'::interval}, q{'soon'::interval}), fault => '22007', pre => 1 }
	  if $v eq 'malformed';
	return { sql => q{'1000000000 years'::interval}, fault => '22008', pre => 1 };
}

sub gen_partitions
{
	my $v = weighted(40, 'ok', 6, 'null', 10, 'bad', 3, 'precall');
	return { sql => pick('1', '7', '1024') } if $v eq 'ok';
	return { sql => 'NULL', fault => '22023' } if $v eq 'null';
	return { sql => pick('0', '-1', '1025', '2147483647', '-2147483648'), fault => '22023' }
	  if $v eq 'bad';
	my $p = pick([ '2147483648::integer', '22003' ], [ q{'x'::integer}, '22P02' ]);
	return { sql => $p->[0], fault => $p->[1], pre => 1 };
}

sub gen_max_pending
{
	my $v = weighted(40, 'null', 20, 'ok', 10, 'bad', 2, 'precall');
	return { sql => 'NULL' } if $v eq 'null';
	return { sql => pick('1', '1000', '9223372036854775807') } if $v eq 'ok';
	return { sql => pick('0', '-1', '-9223372036854775808'), fault => '22023' } if $v eq 'bad';
	return { sql => '9223372036854775808::bigint', fault => '22003', pre => 1 };
}

sub first_fault
{
	my (@settings) = @_;
	for my $s (@settings) { return $s->{fault} if $s->{pre}; }
	for my $s (@settings) { return $s->{fault} if $s->{fault}; }
	return undef;
}

# Keeps at most one pre-call failure among settings.
sub one_precall
{
	my (@settings) = @_;
	my $seen = 0;
	for my $s (@settings)
	{
		next unless $s->{pre};
		if ($seen++) { $s->{sql} = 'NULL'; $s->{pre} = 0; $s->{fault} = $s->{null_fault}; }
	}
}

sub gen_create_topic
{
	my $n = ++$case_no;
	my $name = weighted(
		50, { sql => lit("t$n") },
		3, { sql => lit('t' x 63) },
		5, { sql => lit(pick('h_plain', 'h_schema', 'h_empty')), exists => 1 },
		3, { sql => 'NULL', fault => '22023' },
		3, { sql => "''", fault => '22023' },
		8, { sql => lit(pick('t' x 64, 'bad name', '-x', '.x', "t\xD1\x82", "a'b", "t\n", 'a;b', 'a"b')),
			fault => '22023' },
		2, { sql => pick(map { $_->[0] } @PRECALL_TEXT), pre => 1 });
	if ($name->{pre})
	{
		my ($p) = grep { $_->[0] eq $name->{sql} } @PRECALL_TEXT;
		$name->{fault} = $p->[1];
	}
	my @s = ($name, gen_partitions(), gen_interval('retention'), gen_interval('window'),
		gen_max_pending(), gen_schema_setting());
	$_->{null_fault} = '22023' for @s[ 0 .. 3 ];
	one_precall(@s);
	my $fault = first_fault(@s);
	$fault = '42710' if !$fault && $name->{exists};
	return {
		expr => 'evproc_create_topic(' . join(', ', map { $_->{sql} } @s) . ')',
		rollback => 1,
		expect => $fault // '00000',
		check => sub { $_[0] =~ /^\d+$/ ? undef : "topic id '$_[0]'" } };
}

sub gen_alter_topic
{
	++$case_no;
	my $t = pick('h_plain', 'h_schema', 'h_empty');
	my $name = weighted(
		85, { sql => lit($t) },
		3, { sql => 'NULL', fault => '22023' },
		3, { sql => "''", fault => '22023' },
		5, { sql => lit('no_such_topic'), fault => '42704' });
	my @s = (
		chance(0.5) ? { sql => 'NULL' } : gen_partitions(),
		chance(0.5) ? { sql => 'NULL' } : gen_interval('retention'),
		chance(0.5) ? { sql => 'NULL' } : gen_interval('window'),
		chance(0.6) ? { sql => 'NULL' } : gen_max_pending(),
		chance(0.6) ? { sql => 'NULL' } : gen_schema_setting());
	# NULL means "keep": no fault for a NULL setting here.
	for my $x (@s) { $x->{fault} = undef if $x->{sql} eq 'NULL'; $x->{null_fault} = undef; }
	my $clear_max = chance(0.1);
	my $clear_schema = chance(0.1);
	one_precall($name, @s);
	# evproc_alter_topic's order: arguments, name, look-up, clear_* conflicts, partitions
	# of a topic with events or subscriptions (h_plain has h_sub), merged settings.
	my ($partitions, $max_pending, $schema) = @s[ 0, 3, 4 ];
	my $has_events = $t eq 'h_plain' || ($t eq 'h_schema' && @{ $topic{$t}{tx}{events} });
	my ($pre) = grep { $_->{pre} } @s;
	my $fault =
	    $pre ? $pre->{fault}
	  : $name->{fault} ? $name->{fault}
	  : $clear_max && $max_pending->{sql} ne 'NULL' ? '22023'
	  : $clear_schema && $schema->{sql} ne 'NULL' ? '22023'
	  : $partitions->{sql} ne 'NULL' && $has_events ? '0A000'
	  : first_fault(@s);
	my $sql = 'evproc_alter_topic(' . join(', ', $name->{sql}, map { $_->{sql} } @s)
	  . ", clear_max_pending => " . ($clear_max ? 'true' : 'false')
	  . ", clear_schema => " . ($clear_schema ? 'true' : 'false') . ')';
	return { expr => $sql, rollback => 1, expect => $fault // '00000' };
}

sub gen_subscribe
{
	my $n = ++$case_no;
	my @checks;    # [sql, fault]
	my $name = weighted(
		80, [ lit("s$n"), undef ], 4, [ lit('h_sub'), 'exists' ], 3, [ 'NULL', '22023' ],
		3, [ "''", '22023' ], 5, [ lit(pick('bad name', 's' x 64, '_s')), '22023' ]);
	my $topic_arg = weighted(
		80, [ lit(pick('h_plain', 'h_schema')), undef ], 3, [ 'NULL', '22023' ],
		3, [ "''", '22023' ], 5, [ lit('no_such_topic'), '42704' ]);
	# NULL makes a pull subscription (read by consumers, docs/consumers.md): no fault.
	my $handler = weighted(
		80, [ lit(pick('h_handler', 'public.h_handler', 'h_handler(evproc.event[])')), undef ],
		3, [ 'NULL', undef ], 3, [ "''", '22023' ],
		4, [ lit(pick('no_such_handler', 'h_handler(int)', 'h_handler(evproc.event)')), '42883' ],
		3, [ lit('h_wrong'), '42P13' ]);
	my %setting = (
		batch_size => [ [ '100', undef ], [ '10000', undef ], [ '0', '22023' ], [ '10001', '22023' ], [ 'NULL', '22023' ] ],
		max_attempts => [ [ '1', undef ], [ '1000', undef ], [ '0', '22023' ], [ '1001', '22023' ] ],
		backoff_base => [ [ q{'1 second'}, undef ], [ q{'0'}, '22023' ], [ q{'-1 s'}, '22023' ], [ 'NULL', '22023' ] ],
		backoff_cap => [ [ q{'1 hour'}, undef ], [ q{'1 microsecond'}, '22023' ], [ 'NULL', '22023' ] ],
		handler_timeout => [ [ q{'30 s'}, undef ], [ q{'1 day'}, undef ], [ q{'0'}, '22023' ], [ q{'25 hours'}, '22023' ] ],
		on_dead_letter => [ [ q{'skip'}, undef ], [ q{'block'}, undef ], [ q{'SKIP'}, '22023' ], [ q{'x'}, '22023' ], [ 'NULL', '22023' ] ],
		failure_budget => [ [ '0.5', undef ], [ '1', undef ], [ '0', '22023' ], [ '1.5', '22023' ], [ q{'NaN'::real}, '22023' ], [ q{'Infinity'::real}, '22023' ] ],
		breaker_min_attempts => [ [ '20', undef ], [ '0', '22023' ], [ 'NULL', '22023' ] ],
		breaker_cooldown => [ [ q{'30 s'}, undef ], [ q{'0'}, '22023' ], [ 'NULL', '22023' ] ],);
	my @names = qw(batch_size max_attempts backoff_base backoff_cap handler_timeout
	  on_dead_letter failure_budget breaker_min_attempts breaker_cooldown);
	my (%chosen, $setting_fault);
	for my $s (@names)
	{
		# The first value of each is valid (backoff_cap '1 hour' >= backoff_base '1 second').
		my $choice = chance(0.85) ? $setting{$s}[0] : pick(@{ $setting{$s} });
		$chosen{$s} = $choice->[0];
		$setting_fault //= $choice->[1];
	}
	my $run_as = weighted(85, [ q{'app'}, undef ], 5, [ 'NULL', '42501' ], 3, [ q{'postgres'}, '42501' ],
		3, [ q{'no_such_role'}, '42704' ]);
	my $precall = chance(0.03) ? pick([ 'batch_size', '2147483648::integer', '22003' ],
			[ 'failure_budget', q{'1e50'::real}, '22003' ]) : undef;
	$chosen{ $precall->[0] } = $precall->[1] if $precall;
	$precall = [ undef, undef, '42704' ] if !$precall && ($run_as->[1] // '') eq '42704';
	my @args = map { "$_ => $chosen{$_}" } @names;
	# The handler is resolved first, by the caller's wrapper (in the caller's search_path),
	# before the trampolined implementation checks the rest.
	my $fault =
	    $precall ? $precall->[2]
	  : $handler->[1] ? $handler->[1]
	  : $name->[1] && $name->[1] ne 'exists' ? $name->[1]
	  : $topic_arg->[1] ? $topic_arg->[1]
	  : $setting_fault ? $setting_fault
	  : $run_as->[1] ? $run_as->[1]
	  : $name->[1] ? '42710'
	  : undef;
	return {
		expr => "evproc_subscribe($name->[0], $topic_arg->[0], $handler->[0], "
		  . join(', ', @args) . ", run_as => $run_as->[0])",
		rollback => 1,
		expect => $fault // '00000',
		check => sub { $_[0] =~ /^\d+$/ ? undef : "subscription id '$_[0]'" } };
}

sub gen_operation
{
	++$case_no;
	my $sub = weighted(80, [ lit('h_sub'), undef ], 5, [ 'NULL', '22023' ], 5, [ "''", '22023' ],
		10, [ lit(pick('nope', 'H_SUB', "h_sub\n")), '42704' ]);
	my $op = pick('status', 'replay', 'redrive', 'purge', 'cancel', 'dead_letters');
	if ($op eq 'status')
	{
		my ($arg, $fault, $want) = @{ weighted(
				3, [ 'NULL', '22004' ], 3, [ '-1', '42704' ], 2, [ '9223372036854775807', '42704' ],
				6, [ q{(SELECT max(id) FROM evproc.log WHERE topic_id = (SELECT id FROM evproc.topic WHERE name = 'h_plain'))}, undef, '1' ],
				2, [ q{(SELECT max(id) FROM evproc.log WHERE topic_id = (SELECT id FROM evproc.topic WHERE name = 'h_schema'))}, undef, '0' ]) };
		# Until a topic has a committed event, max(id) is NULL.
		my $has = $arg =~ /h_plain/ ? @{ $topic{h_plain}{tx}{events} } : $arg =~ /h_schema/ ? @{ $topic{h_schema}{tx}{events} } : 1;
		$fault = '22004' unless $has;
		return {
			expr => "(SELECT count(*) FROM evproc_event_status($arg))",
			expect => $fault // '00000',
			check => sub { $_[0] eq $want ? undef : "status rows $_[0], want $want" } };
	}
	if ($op eq 'replay')
	{
		my ($args, $fault) = @{ weighted(
				6, [ '', undef ], 3, [ ", key => ''", '22023' ], 2, [ ', key => ' . lit(random_text(8)), undef ],
				3, [ ", from_time => now() + interval '1 day'", '22023' ],
				2, [ ", from_time => '2000-01-01', to_time => '1999-01-01'", '22023' ],
				1, [ ", from_time => 'infinity'", '22023' ],
				1, [ ", from_time => 'tomorrow'::timestamptz + interval '1000000 years'", '22008' ]) };
		$fault = $sub->[1] if $sub->[1] && !($fault && $fault eq '22008');
		return { expr => "evproc_replay($sub->[0]$args)", rollback => 1,
			expect => $fault // '00000', check => sub { $_[0] =~ /^\d+$/ ? undef : "replay id '$_[0]'" } };
	}
	if ($op eq 'redrive' || $op eq 'purge')
	{
		my @filters = $op eq 'redrive'
		  ? ([ '', undef ], [ q{, event_ids => '{}'}, undef ], [ q{, event_ids => '{1,NULL}'}, '22004' ],
			[ q{, key => ''}, '22023' ], [ q{, sqlstate => 'abc'}, '22023' ], [ q{, sqlstate => '40001'}, undef ],
			[ q{, dead_after => now(), dead_before => now() - interval '1 s'}, '22023' ],
			[ q{, event_ids => '{-1,9223372036854775807}'}, undef ])
		  : ([ '', '22023' ], [ q{, event_ids => '{}'}, undef ], [ q{, event_ids => '{NULL}'}, '22004' ],
			[ q{, older_than => 'infinity'}, undef ], [ q{, older_than => '-infinity'}, undef ]);
		my ($args, $fault) = @{ pick(@filters) };
		$fault = $sub->[1] if $sub->[1];
		return { expr => "evproc_$op($sub->[0]$args)", rollback => 1,
			expect => $fault // '00000', check => sub { $_[0] eq '0' ? undef : "$op returned $_[0]" } };
	}
	if ($op eq 'cancel')
	{
		my ($arg, $fault) = @{ pick([ 'NULL', '22023' ], [ '-1', '42704' ], [ '2147483647', '42704' ]) };
		return { expr => "evproc_cancel_replay($arg)", rollback => 1, expect => $fault };
	}
	return { expr => "(SELECT count(*) FROM evproc_dead_letters($sub->[0]))",
		expect => $sub->[1] // '00000', check => sub { $_[0] eq '0' ? undef : "dead letters $_[0]" } };
}

# A valid event on h_plain (the bulk of long transactions).
sub gen_clean_enqueue
{
	my $n = ++$case_no;
	my $key = chance(0.8) ? 'k' . irand(20) : undef;
	my $dedup = chance(0.3) ? 'dup-' . irand(40) : undef;
	my $payload = random_object(0);
	my ($owner, $hit) = @{ model_event('h_plain', $dedup, "c$n") };
	return {
		expr => 'evproc_enqueue(' . join(', ', q{'h_plain'}, lit($key), lit($payload) . '::jsonb', 'NULL', lit($dedup)) . ')',
		expect => '00000',
		check => sub {
			my ($r) = @_;
			return bind_fresh("c$n", $r) unless $hit;
			return $token_id{$owner} && $r eq $token_id{$owner} ? undef : "dedup hit returned $r";
		} };
}

# A transaction publishing through savepoints: each step an enqueue (valid or not) in
# its own savepoint, released or rolled back; then COMMIT or ROLLBACK. Long ones release
# more than 32 savepoints that published (the transaction counters' slots).
sub gen_transaction
{
	my ($steps, $commit) = @_;
	$steps //= chance(0.3) ? 40 + irand(20) : 2 + irand(5);
	$commit //= chance(0.6);
	my $begin = clone_tx();
	my @steps;
	for (1 .. $steps)
	{
		my $before = clone_tx();
		# Mostly single events: a batch of 50 in every step would make these slow.
		my $case = $steps > 32 && chance(0.85) ? gen_clean_enqueue()
		  : weighted(3, \&gen_enqueue, 1, \&gen_batch)->();
		my $undo = chance($steps > 32 ? 0.05 : 0.2);
		restore_tx($before) if $undo;
		$case->{undo} = $undo;
		push @steps, $case;
	}
	restore_tx($begin) unless $commit;
	return { transaction => \@steps, commit => $commit };
}

# ---------------------------------------------------------------------------------------
# The server.
# ---------------------------------------------------------------------------------------
my $node = evproc_node('hostile', "evproc.max_batch_events = 50\n");
$node->safe_psql(
	'postgres', qq{
SELECT evproc_create_topic('h_plain', partitions => 4);
SELECT evproc_create_topic('h_schema', partitions => 2, payload_schema => '$SCHEMA');
SELECT evproc_create_topic('h_empty', partitions => 8);
CREATE TABLE h_seen (event_id bigint PRIMARY KEY);
GRANT INSERT ON h_seen TO app;
CREATE FUNCTION h_handler(events evproc.event[]) RETURNS void LANGUAGE sql AS
  \$\$ INSERT INTO h_seen SELECT e.id FROM unnest(events) e ON CONFLICT DO NOTHING \$\$;
CREATE FUNCTION h_wrong(n integer) RETURNS void LANGUAGE sql AS 'SELECT';
SELECT evproc_subscribe('h_sub', 'h_plain', 'h_handler', run_as => 'app');
});
my $pid_file = $node->data_dir . '/postmaster.pid';
my ($postmaster_pid) = split /\n/, slurp_file($pid_file);
my $log_offset = 0;
my $CRASH = qr/terminated by signal|was terminated by exception|exited with exit code [1-9]|
	all\ server\ processes\ terminated|TRAP:|PANIC:|AddressSanitizer|stack\ smashing/x;

my (%seen_state, @failures);
my $dumped = 0;

# Runs the cases of one psql session and checks each; returns the number checked.
sub run_session
{
	my (@cases) = @_;
	my $script = "\\set VERBOSITY default\n\\set SHOW_CONTEXT never\n";
	my @flat;
	my $emit = sub {
		my ($c) = @_;
		push @flat, $c;
		my $i = $#flat;
		$script .= "\\unset h_r\n\\echo '\@\@C $i'\nSELECT ($c->{expr})::text AS r \\gset h_\n\\echo '\@\@S' :SQLSTATE\n"
		  . "\\if :ERROR\n\\echo '\@\@M' :LAST_ERROR_MESSAGE\n\\else\n\\echo '\@\@R' :'h_r'\n";
		$script .= "$c->{verify};\n" if $c->{verify};
		$script .= "\\endif\n";
	};
	for my $c (@cases)
	{
		if ($c->{transaction})
		{
			$script .= "BEGIN;\n";
			for my $s (@{ $c->{transaction} })
			{
				$script .= "SAVEPOINT s;\n";
				$emit->($s);
				$script .= $s->{undo} ? "ROLLBACK TO SAVEPOINT s;\n"
				  : "\\if :ERROR\nROLLBACK TO SAVEPOINT s;\n\\else\nRELEASE SAVEPOINT s;\n\\endif\n";
			}
			$script .= $c->{commit} ? "COMMIT;\n" : "ROLLBACK;\n";
		}
		elsif ($c->{rollback})
		{
			$script .= "BEGIN;\n";
			$emit->($c);
			$script .= "ROLLBACK;\n";
		}
		else { $emit->($c); }
	}
	# EVPROC_HOSTILE_DUMP=<dir>: keep each session's script, to replay a case by hand.
	if (my $dir = $ENV{EVPROC_HOSTILE_DUMP})
	{
		open(my $fh, '>', sprintf('%s/session_%03d.sql', $dir, ++$dumped)) or die "dump: $!";
		print $fh $script;
		close $fh;
	}
	my ($stdout, $stderr) = ('', '');
	my $rc = $node->psql('postgres', $script, stdout => \$stdout, stderr => \$stderr,
		on_error_stop => 0, timeout => 300);
	push @failures, "psql exited with $rc: " . substr($stderr, -2000) if $rc != 0;
	push @failures, "lost the connection: $stderr"
	  if $stderr =~ /server closed the connection|connection to server was lost|no connection to the server/;

	# Parse: @@C i, then @@S state, then @@M message or @@R result (+ V line).
	my (%out, $cur, $in_msg);
	for my $line (split /\n/, $stdout)
	{
		if ($line =~ /^\@\@C (\d+)$/) { $cur = $1; $out{$cur} = { v => [] }; $in_msg = 0; next; }
		next unless defined $cur;
		if ($line =~ /^\@\@S (\S*)$/) { $out{$cur}{state} = $1; next; }
		if ($line =~ /^\@\@M ?(.*)$/) { $out{$cur}{msg} = $1; $in_msg = 1; next; }
		if ($line =~ /^\@\@R ?(.*)$/) { $out{$cur}{result} = $1; $in_msg = 0; next; }
		if ($in_msg) { $out{$cur}{msg} .= "\n$line"; next; }
		if ($line =~ /^V/) { push @{ $out{$cur}{v} }, $line; next; }
	}
	for my $i (0 .. $#flat)
	{
		my $c = $flat[$i];
		my $o = $out{$i};
		# Failures read "<what went wrong> in case <expression>", cut to stay legible.
		my $expr = length $c->{expr} > 400 ? substr($c->{expr}, 0, 400) . '...' : $c->{expr};
		my $in = " in case $expr";
		if (!$o || !defined $o->{state})
		{
			push @failures, "no outcome$in";
			next;
		}
		$seen_state{ $o->{state} }++;
		if ($o->{state} ne $c->{expect})
		{
			my $msg = defined $o->{msg} ? ' (' . substr($o->{msg}, 0, 300) . ')' : '';
			push @failures, "SQLSTATE $o->{state}, expected $c->{expect}$msg$in";
			next;
		}
		if ($o->{state} ne '00000')
		{
			my $msg = $o->{msg} // '';
			my $copy = $msg;
			push @failures, "unclean message '$msg'$in"
			  if $msg eq '' || $msg =~ /json\.exception|unknown error/ || !utf8::decode($copy);
			next;
		}
		my $r = $o->{result};
		$r =~ s/^'(.*)'$/$1/s if defined $r;
		if ($c->{check})
		{
			my $err = $c->{check}->($r);
			push @failures, "$err$in" if $err;
		}
		if ($c->{verify})
		{
			my $v = join(',', @{ $o->{v} });
			push @failures, "stored event differs ($v, want $c->{verify_expect})$in"
			  unless $v eq $c->{verify_expect};
		}
	}
	return scalar @flat;
}

sub server_intact
{
	my ($pid_now) = split /\n/, slurp_file($pid_file);
	my $log = slurp_file($node->logfile);
	my $new = substr($log, $log_offset);
	$log_offset = length $log;
	my @crash = grep { /$CRASH/ } split /\n/, $new;
	return "postmaster $pid_now is not $postmaster_pid" if $pid_now != $postmaster_pid;
	return "crash in the log: @crash[0 .. ($#crash < 4 ? $#crash : 4)]" if @crash;
	my ($rc, $out) = $node->psql('postgres', 'SELECT 1');
	return "server does not answer ($rc)" unless $rc == 0 && $out eq '1';
	return undef;
}

# ---------------------------------------------------------------------------------------
# Generate and run.
# ---------------------------------------------------------------------------------------
my $generated = 0;
my $checked = 0;
my $sessions = 0;
my @broken;
my @first = (gen_transaction(60, 0), gen_transaction(60, 1));    # always a rollback and a commit
$generated += 120;
while ($generated < $case_count || @first)
{
	my @cases = @first;
	@first = ();
	while (@cases < $cases_per_session && $generated < $case_count)
	{
		my $gen = weighted(
			30, \&gen_enqueue, 16, \&gen_batch, 9, \&gen_create_topic, 6, \&gen_alter_topic,
			7, \&gen_subscribe, 8, \&gen_operation, 2, \&gen_transaction);
		my $c = $gen->();
		push @cases, $c;
		$generated += $c->{transaction} ? scalar @{ $c->{transaction} } : 1;
	}
	my $t0 = time();
	$checked += run_session(@cases);
	note(sprintf("session %d: %d cases in %.1f s", $sessions + 1, scalar(@cases), time() - $t0));
	$sessions++;
	my $err = server_intact();
	if ($err)
	{
		push @broken, "after session $sessions: $err";
		last;
	}
	last if @failures > 50;
}

is($checked, $generated, "ran $generated generated cases in $sessions sessions");
is(scalar(@broken), 0, 'the server never crashed and kept its postmaster')
  or diag(join("\n", @broken));
is(scalar(@failures), 0, 'every case ended in its predicted SQLSTATE with the predicted effect')
  or diag(join("\n", @failures[ 0 .. ($#failures < 30 ? $#failures : 30) ]));
note('outcomes: ' . join(', ', map { "$_ x$seen_state{$_}" } sort keys %seen_state));
for my $state (sort keys %seen_state)
{
	ok(exists $SQLSTATES{$state}, "SQLSTATE $state is one the generators expect");
}
if ($case_count >= 1000)
{
	ok($seen_state{$_}, "the generators produced SQLSTATE $_")
	  for qw(00000 22001 22004 22021 22023 22P02 22P05 23514 42704 54001);
}

# ---------------------------------------------------------------------------------------
# Consistency: the log, the dedup ids and the counters agree with the model.
# ---------------------------------------------------------------------------------------
for my $t (sort keys %topic)
{
	my $m = $topic{$t};
	my @want = sort { $a <=> $b } map { $token_id{$_} // "unbound:$_" } @{ $m->{tx}{events} };
	my $have = $node->safe_psql('postgres',
		"SELECT string_agg(l.id::text, ',' ORDER BY l.id) FROM evproc.log l JOIN evproc.topic t ON t.id = l.topic_id WHERE t.name = '$t'");
	is($have, join(',', @want), "$t: evproc.log holds exactly the committed events (" . scalar(@want) . ')');
	my $dedup = $node->safe_psql('postgres',
		"SELECT string_agg(d.dedup_id || '=' || d.event_id, ',' ORDER BY d.dedup_id COLLATE \"C\") "
		  . "FROM evproc.dedup d JOIN evproc.topic t ON t.id = d.topic_id WHERE t.name = '$t'");
	my $want_dedup = join(',',
		map { "$_=" . ($token_id{ $m->{tx}{dedup}{$_} } // 'unbound') }
		sort keys %{ $m->{tx}{dedup} });
	is($dedup, $want_dedup, "$t: evproc.dedup maps each committed dedup id to its first event");
	is( $node->safe_psql('postgres',
			"SELECT published || '/' || dedup_hits || '/' || rejected_invalid || '/' || rejected_full FROM evproc_topic_stats WHERE topic = '$t'"),
		"$m->{tx}{published}/$m->{hits}/$m->{rejected}/0",
		"$t: published/dedup_hits/rejected_invalid/rejected_full agree with the model");
	is( $node->safe_psql('postgres',
			"SELECT count(*) FROM (SELECT l.key FROM evproc.log l JOIN evproc.topic t ON t.id = l.topic_id
			  WHERE t.name = '$t' AND (l.partition NOT BETWEEN 0 AND t.partitions - 1
			     OR (l.key IS NULL AND l.partition <> l.id % t.partitions))
			  UNION ALL
			  SELECT l.key FROM evproc.log l JOIN evproc.topic t ON t.id = l.topic_id
			   WHERE t.name = '$t' AND l.key IS NOT NULL GROUP BY l.key HAVING count(DISTINCT l.partition) > 1) bad"),
		'0',
		"$t: partitions in range, one per key, keyless by id");
}
is($node->safe_psql('postgres', "SELECT count(*) FROM evproc.topic WHERE name NOT IN ('h_plain', 'h_schema', 'h_empty')"),
	'0', 'no topic created in a rolled-back case survived');
is($node->safe_psql('postgres', 'SELECT string_agg(name, \',\') FROM evproc.subscription'),
	'h_sub', 'no subscription created in a rolled-back case survived');
is($node->safe_psql('postgres', "SELECT payload_schema = '$SCHEMA'::jsonb FROM evproc.topic WHERE name = 'h_schema'"),
	't', 'the schema topic kept its schema');

# The workers delivered every event of h_plain, hostile payloads included, to the handler.
ok( wait_until(
		$node,
		"SELECT (SELECT count(*) FROM h_seen) = (SELECT count(*) FROM evproc.log l JOIN evproc.topic t ON t.id = l.topic_id WHERE t.name = 'h_plain')",
		timeout => 120),
	'the subscription handled every event of its topic');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM h_seen s LEFT JOIN evproc.log l ON l.id = s.event_id WHERE l.id IS NULL"),
	'0',
	'and nothing else');
is(server_intact(), undef, 'no crash until the end');

$node->stop;
done_testing();
