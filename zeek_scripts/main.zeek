##! ZeekNDM: outbound service-scan detection models counted with SumStats.
##!
##! A model counts the distinct EXTERNAL responders an INTERNAL originator tries to
##! reach on the model's ports within a window (one SumStats epoch). Each severity
##! threshold crossed in an epoch raises the model's notice once. SumStats merges the
##! per-worker counts on the manager, so the design holds on a cluster.
##!
##! Internal means :zeek:see:`Site::is_local_addr`: set ``Site::local_nets`` (or
##! networks.cfg under zeekctl) correctly, since a wrong internal-network definition is
##! the known false positive. The evidence travels in the notice's ``msg`` and ``sub``
##! (stable ``key=value`` form) and in typed ``zeekndm_*`` notice.log columns, which
##! ``zeekndm replay``/``zeekndm run`` read to build ECS alerts.

@load base/frameworks/notice
@load base/frameworks/sumstats
@load base/utils/site
@load base/utils/time

module ZeekNDM;

export {
	## A detection model as the framework runs it. The per-model scripts build one
	## from their ``&redef`` constants and pass it to :zeek:see:`ZeekNDM::register_model`.
	type Model: record {
		## Model name, equal to the zeekndm model it mirrors.
		name: string;
		## Notice raised when a threshold is crossed.
		note: Notice::Type;
		## Responder ports watched (transport included).
		ports: set[port];
		## Severity names, ascending (e.g. low, medium, high).
		severities: vector of string;
		## Distinct external responders needed for each severity, ascending.
		thresholds: vector of count;
		## Counting window: the SumStats epoch.
		window: interval;
		## Originators never counted (authorised scanners).
		ignore_sources: set[subnet] &default=set();
		## Responders never counted (known partners).
		ignore_destinations: set[subnet] &default=set();
	};

	## How long a notice with the same identifier (model, source and severity) is
	## suppressed. Mirrors ``update_interval`` in zeekndm.yaml: shorter gives more
	## repeated notices for a long scan, longer hides a scanner that returns.
	const suppress_interval = 1hr &redef;

	## Destinations kept as a sample in the evidence. More helps triage but makes
	## longer notices.
	const sample_size = 5 &redef;

	## Sources never counted by any model, in addition to each model's own list.
	const ignore_sources: set[subnet] = {} &redef;

	## Destinations never counted by any model, in addition to each model's own list.
	const ignore_destinations: set[subnet] = {} &redef;

	## Veto an observation: a handler that breaks excludes it from the model.
	global scan_policy: hook(model: string, scanner: addr, victim: addr,
	    scanned_port: port);

	## Start counting for `m`. Call from :zeek:id:`zeek_init` on every node.
	global register_model: function(m: Model);
}

redef record Notice::Info += {
	## ZeekNDM model that raised the notice.
	zeekndm_model: string &log &optional;
	## Severity whose threshold was crossed.
	zeekndm_severity: string &log &optional;
	## Distinct external responders counted in the epoch.
	zeekndm_distinct: count &log &optional;
	## True when the distinct count hit its cap and is a lower bound.
	zeekndm_lower_bound: bool &log &optional;
	## The threshold that was crossed.
	zeekndm_threshold: count &log &optional;
	## Connection attempts counted in the epoch.
	zeekndm_attempts: count &log &optional;
	## Attempts that got no answer or were rejected.
	zeekndm_failures: count &log &optional;
	## Counting window of the model.
	zeekndm_window: interval &log &optional;
	## First and last observation in the epoch.
	zeekndm_begin: time &log &optional;
	zeekndm_end: time &log &optional;
	## A few of the destinations.
	zeekndm_sample: vector of addr &log &optional;
};

# Registered models by name, and model names by watched port.
global models: table[string] of Model;
global models_by_port: table[port] of set[string];

function stream_name(model: string): string
	{
	return "zeekndm." + model;
	}

function fail_stream_name(model: string): string
	{
	return "zeekndm." + model + ".fail";
	}

# Ports in a stable order (number, then transport) for the evidence text.
function ports_text(ports: set[port]): string
	{
	local v: vector of port = vector();
	for ( p in ports )
		v += p;

	sort(v, function(a: port, b: port): int
		{
		if ( port_to_count(a) != port_to_count(b) )
			return port_to_count(a) < port_to_count(b) ? -1 : 1;
		return cat(a) < cat(b) ? -1 : 1;
		});

	local s: vector of string = vector();
	for ( i in v )
		s += cat(v[i]);

	return join_string_vec(s, ",");
	}

function unique_max(m: Model): count
	{
	# Cap the per-source set a little above the highest threshold, as scan.zeek does:
	# memory stays bounded and a capped count is reported as a lower bound.
	return m$thresholds[|m$thresholds| - 1] + 2;
	}

function threshold_value(key: SumStats::Key, result: SumStats::Result): double
	{
	local stream = stream_name(key$str);
	if ( stream !in result )
		return 0.0;

	return result[stream]$unique + 0.0;
	}

function crossed_level(m: Model, distinct: count): count
	{
	local level = 0;
	for ( i in m$thresholds )
		{
		if ( distinct >= m$thresholds[i] )
			level = i;
		}

	return level;
	}

function raise_notice(key: SumStats::Key, result: SumStats::Result)
	{
	if ( key$str !in models )
		return;

	local m = models[key$str];
	local r = result[stream_name(m$name)];
	local failures = 0;
	if ( fail_stream_name(m$name) in result )
		failures = double_to_count(result[fail_stream_name(m$name)]$sum);

	local level = crossed_level(m, r$unique);
	local severity = m$severities[level];
	local capped = r$unique >= unique_max(m);
	local at_least = capped ? "at least " : "";
	local ports = ports_text(m$ports);
	local sample: vector of addr = vector();
	local sample_text: vector of string = vector();
	for ( i in r$samples )
		{
		if ( |sample| >= sample_size )
			break;

		sample += to_addr(r$samples[i]$str);
		sample_text += r$samples[i]$str;
		}

	local msg = fmt("%s scanned %s%d external hosts on %s in %s", key$host,
	    at_least, r$unique, ports, duration_to_mins_secs(r$end - r$begin));
	local sub = fmt("model=%s severity=%s distinct=%d lower_bound=%s threshold=%d attempts=%d failures=%d window=%.0f ports=%s begin=%.6f sample=%s",
	    m$name, severity, r$unique, capped ? "T" : "F", m$thresholds[level],
	    r$num, failures, interval_to_double(m$window), ports,
	    time_to_double(r$begin), join_string_vec(sample_text, ","));

	NOTICE([$note=m$note, $src=key$host, $n=r$unique, $msg=msg, $sub=sub,
	    $identifier=cat(m$name, "/", key$host, "/", severity),
	    $suppress_for=suppress_interval, $zeekndm_model=m$name,
	    $zeekndm_severity=severity, $zeekndm_distinct=r$unique,
	    $zeekndm_lower_bound=capped, $zeekndm_threshold=m$thresholds[level],
	    $zeekndm_attempts=r$num, $zeekndm_failures=failures,
	    $zeekndm_window=m$window, $zeekndm_begin=r$begin,
	    $zeekndm_end=r$end, $zeekndm_sample=sample]);
	}

function register_model(m: Model)
	{
	models[m$name] = m;
	for ( p in m$ports )
		{
		if ( p !in models_by_port )
			models_by_port[p] = set();

		add models_by_port[p][m$name];
		}

	local thresholds: vector of double = vector();
	for ( i in m$thresholds )
		thresholds += m$thresholds[i] + 0.0;

	local seen: SumStats::Reducer = [$stream=stream_name(m$name), $apply=set(
	    SumStats::UNIQUE, SumStats::SAMPLE), $unique_max=unique_max(m),
	    $num_samples=sample_size];
	local failed: SumStats::Reducer = [$stream=fail_stream_name(m$name),
	    $apply=set(SumStats::SUM)];
	local ss: SumStats::SumStat = [$name=stream_name(m$name), $epoch=m$window,
	    $reducers=set(seen, failed), $threshold_val=threshold_value,
	    $threshold_series=thresholds, $threshold_crossed=raise_notice];
	SumStats::create(ss);
	}

function in_any(a: addr, nets: set[subnet]): bool
	{
	return |nets| > 0 && a in nets;
	}

# One connection attempt from `c`'s originator; `failed` if it got no answer or a reset.
function count_attempt(c: connection, failed: bool)
	{
	local id = c$id;
	if ( id$resp_p !in models_by_port )
		return;

	# Outbound only: an internal originator and an external responder.
	if ( ! Site::is_local_addr(id$orig_h) || Site::is_local_addr(id$resp_h) )
		return;

	if ( in_any(id$orig_h, ignore_sources)
	    || in_any(id$resp_h, ignore_destinations) )
		return;

	for ( name in models_by_port[id$resp_p] )
		{
		local m = models[name];
		if ( in_any(id$orig_h, m$ignore_sources)
		    || in_any(id$resp_h, m$ignore_destinations) )
			next;

		if ( ! hook scan_policy(name, id$orig_h, id$resp_h, id$resp_p) )
			next;

		local key: SumStats::Key = [$host=id$orig_h, $str=name];
		SumStats::observe(stream_name(name), key, [$str=cat(id$resp_h)]);
		if ( failed )
			SumStats::observe(fail_stream_name(name), key, [$num=1]);
		}
	}

# Same test as scan.zeek: a reset that ended an attempt nobody answered with data.
function is_failed_conn(c: connection): bool
	{
	local o = c$orig$state;
	local r = c$resp$state;
	if ( o == TCP_SYN_SENT && r == TCP_RESET )
		return T;

	if ( /[Dd]/ in c$history || o != TCP_RESET )
		return F;

	return r == TCP_SYN_ACK_SENT || ( r == TCP_ESTABLISHED && "S" in c$history );
	}

# A SYN that was never answered.
event connection_attempt(c: connection)
	{
	count_attempt(c, T);
	}

# A SYN answered by a RST.
event connection_rejected(c: connection)
	{
	count_attempt(c, T);
	}

event connection_reset(c: connection)
	{
	if ( is_failed_conn(c) )
		count_attempt(c, T);
	}

event connection_pending(c: connection)
	{
	if ( is_failed_conn(c) )
		count_attempt(c, T);
	}

# The originator closed, the responder never took part.
event connection_half_finished(c: connection)
	{
	count_attempt(c, T);
	}

# Answered attempts count as destinations too: a scan that finds open ports is no
# less a scan.
event connection_established(c: connection)
	{
	count_attempt(c, F);
	}

# UDP has no handshake: count each flow when it ends; no reply data means failed.
event connection_state_remove(c: connection)
	{
	if ( get_port_transport_proto(c$id$resp_p) != udp )
		return;

	count_attempt(c, /d/ !in c$history);
	}
