<%@ page contentType="text/plain; charset=UTF-8" session="false" %>RESOURCE:intranet:<%= request.getServletPath() %><%= request.getPathInfo() == null ? "" : request.getPathInfo() %>
