##! Loads the ZeekNDM framework and every shipped detection model.

@load ./main
@load ./models_defaults
@load ./mongodb_scan_internal_external
@load ./ldap_scanning_inside_to_outside
