##! Detection model defaults for ZeekNDM, GENERATED from zeekndm/builtin_models/*.yaml
##! by ``python -m zeekndm.zeekgen > zeek_scripts/models_defaults.zeek``.
##! Do not edit: redef a constant from local.zeek (for example
##! ``redef ZeekNDM::mongodb_scan_internal_external_low = 50;``), or change the model
##! in zeekndm and regenerate, so the Zeek package and the Python detector agree.

module ZeekNDM;

export {
	## ldap_scanning_inside_to_outside: responder ports watched (389/tcp, 389/udp, 636/tcp, 3268-3269/tcp),
	## port ranges expanded.
	const ldap_scanning_inside_to_outside_ports: set[port] = {
		389/tcp,
		389/udp,
		636/tcp,
		3268/tcp,
		3269/tcp
	} &redef;
	## ldap_scanning_inside_to_outside: distinct external responders in the window for a low
	## severity notice.
	const ldap_scanning_inside_to_outside_low = 25 &redef;
	## ldap_scanning_inside_to_outside: distinct external responders in the window for a medium
	## severity notice.
	const ldap_scanning_inside_to_outside_medium = 100 &redef;
	## ldap_scanning_inside_to_outside: distinct external responders in the window for a high
	## severity notice.
	const ldap_scanning_inside_to_outside_high = 500 &redef;
	## ldap_scanning_inside_to_outside: counting window (one SumStats epoch).
	const ldap_scanning_inside_to_outside_window = 300secs &redef;
	## ldap_scanning_inside_to_outside: originators never counted (authorised scanners).
	const ldap_scanning_inside_to_outside_ignore_sources: set[subnet] = {} &redef;
	## ldap_scanning_inside_to_outside: responders never counted.
	const ldap_scanning_inside_to_outside_ignore_destinations: set[subnet] = {}
	    &redef;

	## mongodb_scan_internal_external: responder ports watched (27017/tcp),
	## port ranges expanded.
	const mongodb_scan_internal_external_ports: set[port] = {27017/tcp} &redef;
	## mongodb_scan_internal_external: distinct external responders in the window for a low
	## severity notice.
	const mongodb_scan_internal_external_low = 25 &redef;
	## mongodb_scan_internal_external: distinct external responders in the window for a medium
	## severity notice.
	const mongodb_scan_internal_external_medium = 100 &redef;
	## mongodb_scan_internal_external: distinct external responders in the window for a high
	## severity notice.
	const mongodb_scan_internal_external_high = 500 &redef;
	## mongodb_scan_internal_external: counting window (one SumStats epoch).
	const mongodb_scan_internal_external_window = 300secs &redef;
	## mongodb_scan_internal_external: originators never counted (authorised scanners).
	const mongodb_scan_internal_external_ignore_sources: set[subnet] = {} &redef;
	## mongodb_scan_internal_external: responders never counted.
	const mongodb_scan_internal_external_ignore_destinations: set[subnet] = {}
	    &redef;
}
