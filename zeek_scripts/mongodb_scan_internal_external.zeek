##! Model mongodb_scan_internal_external: an internal host attempts connections to many
##! distinct external hosts on MongoDB (27017/tcp) within a window. MITRE ATT&CK T1046
##! Network Service Discovery (TA0007) and T1595 Active Scanning (TA0043).

@load ./main
@load ./models_defaults

module ZeekNDM;

export {
	redef enum Notice::Type += {
		## An internal host tried at least
		## ZeekNDM::mongodb_scan_internal_external_low distinct external hosts on the
		## MongoDB ports (ZeekNDM::mongodb_scan_internal_external_ports) within
		## ZeekNDM::mongodb_scan_internal_external_window; raised again at the medium
		## and high thresholds.
		MongoDB_Scan_Internal_External,
	};
}

event zeek_init() &priority=5
	{
	register_model([$name="mongodb_scan_internal_external",
	    $note=MongoDB_Scan_Internal_External,
	    $ports=mongodb_scan_internal_external_ports, $severities=vector(
	    "low", "medium", "high"), $thresholds=vector(
	    mongodb_scan_internal_external_low,
	    mongodb_scan_internal_external_medium,
	    mongodb_scan_internal_external_high),
	    $window=mongodb_scan_internal_external_window,
	    $ignore_sources=mongodb_scan_internal_external_ignore_sources, $ignore_destinations=mongodb_scan_internal_external_ignore_destinations
	    ]);
	}
