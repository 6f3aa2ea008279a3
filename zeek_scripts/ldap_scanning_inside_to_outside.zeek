##! Model ldap_scanning_inside_to_outside: an internal host attempts connections to many
##! distinct external hosts on LDAP (389/tcp and udp, 636/tcp, 3268-3269/tcp) within a
##! window. MITRE ATT&CK T1046 Network Service Discovery (TA0007) and T1595 Active
##! Scanning (TA0043).

@load ./main
@load ./models_defaults

module ZeekNDM;

export {
	redef enum Notice::Type += {
		## An internal host tried at least
		## ZeekNDM::ldap_scanning_inside_to_outside_low distinct external hosts on the
		## LDAP ports (ZeekNDM::ldap_scanning_inside_to_outside_ports) within
		## ZeekNDM::ldap_scanning_inside_to_outside_window; raised again at the medium
		## and high thresholds.
		LDAP_Scanning_Inside_To_Outside,
	};
}

event zeek_init() &priority=5
	{
	register_model([$name="ldap_scanning_inside_to_outside",
	    $note=LDAP_Scanning_Inside_To_Outside,
	    $ports=ldap_scanning_inside_to_outside_ports, $severities=vector(
	    "low", "medium", "high"), $thresholds=vector(
	    ldap_scanning_inside_to_outside_low,
	    ldap_scanning_inside_to_outside_medium,
	    ldap_scanning_inside_to_outside_high),
	    $window=ldap_scanning_inside_to_outside_window,
	    $ignore_sources=ldap_scanning_inside_to_outside_ignore_sources, $ignore_destinations=ldap_scanning_inside_to_outside_ignore_destinations
	    ]);
	}
