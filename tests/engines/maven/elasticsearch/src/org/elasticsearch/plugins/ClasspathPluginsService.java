package org.elasticsearch.plugins;

import java.lang.reflect.Constructor;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;

import org.elasticsearch.Version;
import org.elasticsearch.common.settings.Settings;

/**
 * A PluginsService whose modules are classes on the classpath, not bundles under modules/.
 *
 * <p>Why it sits in Elasticsearch's own package: LoadedPlugin, loadPlugin and loadExtensions
 * are package-private, and an embedded node has no modules/ directory of plugin bundles to
 * load (the published jars are not bundles). The descriptor's constructor differs between
 * 8.x and 9.x (9.x adds a deployment target), so it is found by reflection and the same
 * source compiles against both.
 */
public class ClasspathPluginsService extends PluginsService {
    private final List<LoadedPlugin> plugins = new ArrayList<>();

    public ClasspathPluginsService(Settings settings, PluginsLoader loader, Collection<Class<? extends Plugin>> classes) {
        super(settings, null, loader);
        for (Class<? extends Plugin> type : classes) {
            Plugin plugin = loadPlugin(type, settings, null);
            plugins.add(new LoadedPlugin(descriptor(type), plugin, Thread.currentThread().getContextClassLoader()));
        }
        loadExtensions(plugins);
    }

    @Override
    protected final List<LoadedPlugin> plugins() {
        return plugins;
    }

    private static PluginDescriptor descriptor(Class<? extends Plugin> type) {
        Object[] common = {
            type.getName(), "classpath module", "NA", Version.CURRENT.toString(), "17", type.getName(), null, List.of(),
            false, false, false, false };
        try {
            for (Constructor<?> c : PluginDescriptor.class.getConstructors()) {
                Class<?>[] params = c.getParameterTypes();
                if (params.length == common.length) {
                    return (PluginDescriptor) c.newInstance(common);
                }
                if (params.length == common.length + 1 && params[common.length].isEnum()) {
                    Object[] args = java.util.Arrays.copyOf(common, common.length + 1);
                    args[common.length] = enumValue(params[common.length], "ALL");
                    return (PluginDescriptor) c.newInstance(args);
                }
            }
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException("cannot describe " + type.getName(), e);
        }
        throw new IllegalStateException("no PluginDescriptor constructor known to this launcher");
    }

    @SuppressWarnings({ "unchecked", "rawtypes" })
    private static Object enumValue(Class<?> type, String name) {
        return Enum.valueOf((Class) type, name);
    }
}
