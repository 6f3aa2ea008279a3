package org.elasticsearch.node;

import java.util.Collection;
import java.util.Map;
import java.util.Set;

import org.elasticsearch.env.Environment;
import org.elasticsearch.plugins.ClasspathPluginsService;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.plugins.PluginsLoader;
import org.elasticsearch.plugins.PluginsService;

/**
 * An Elasticsearch node built from the server jar and classpath modules only.
 *
 * <p>In Elasticsearch's package because NodeConstruction and NodeServiceProvider are
 * package-private: that is the seam Elasticsearch's own test framework (MockNode) uses to
 * replace the plugins service.
 */
public class BareNode extends Node {
    public BareNode(Environment environment, Collection<Class<? extends Plugin>> modules) {
        super(NodeConstruction.prepareConstruction(
            environment,
            PluginsLoader.createPluginsLoader(Set.of(), Set.of(), Map.of(), false),
            new NodeServiceProvider() {
                @Override
                PluginsService newPluginService(Environment env, PluginsLoader loader) {
                    return new ClasspathPluginsService(env.settings(), loader, modules);
                }
            },
            true));
    }
}
